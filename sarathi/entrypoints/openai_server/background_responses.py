"""Background responses (``background: true``) running now: an asyncio task each, by
response id, so that ``POST /v1/responses/{id}/cancel`` can end one and the app's shutdown
can end them all. Each holds one admitted request (``ServerState.admit``) until it ends,
so they count against the server's request limits like any other; their results live in
the response store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundResponses:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(
        self, response_id: str, work: Coroutine[Any, Any, None], on_done: Callable[[], None]
    ) -> None:
        """Run ``work`` on the event loop; ``on_done`` runs when it ends, however it ends
        (also cancelled before it began, when the coroutine's own ``finally`` never runs)."""
        task = asyncio.get_running_loop().create_task(work, name=f"background {response_id}")
        self._tasks[response_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(response_id, None)
            on_done()

        task.add_done_callback(done)

    async def cancel(self, response_id: str) -> None:
        """Cancel the response's task, if it runs, and wait until it has ended (its work
        records how it ended)."""
        task = self._tasks.get(response_id)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])

    async def shutdown(self) -> None:
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    def __len__(self) -> int:
        return len(self._tasks)
