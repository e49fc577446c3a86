"""``x-request-id`` on every response, as OpenAI's API sends it (the openai SDK reads it into
``request_id``, for a client's logs and bug reports): the caller's own ``X-Request-Id`` when
it sent one, so a gateway's id carries through, else a new one. A pure ASGI middleware,
outermost, so that refusals made before the routes (401, 413, 503) carry one too. The
caller's id also names its completion (``response_id``).
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"


def response_id(prefix: str, body_id: str | None, request: Request, engine_id: str) -> str:
    """The ``id`` of a completion or chat response, as vLLM's: ``prefix-`` and the caller's
    ``X-Request-Id`` header, else its body's ``request_id``, so a caller finds its own id in
    the response; else ``engine_id``, the engine's request id, which the request log
    (--enable-log-requests) names. The engine's request ids stay the server's: two callers
    may send the same id."""
    own = request.headers.get("x-request-id") or body_id
    return f"{prefix}-{own}" if own else engine_id


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next((v for n, v in scope.get("headers", ()) if n == HEADER and v), None)
        if request_id is None:
            request_id = f"req_{uuid.uuid4().hex}".encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (HEADER, request_id)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)
