"""Reading request bodies safely, as a pure ASGI middleware (inside the API-key check, so a
client without the key never gets a byte of its body read).

- A declared Content-Length over ``--max-request-bytes`` is refused before reading anything;
  a chunked or lying body is counted as it arrives and refused as soon as it passes the limit.
- The whole body must arrive within ``--request-read-timeout`` seconds (408 otherwise): a
  client that stops half way does not hold a connection, and its bytes, for ever.
- The bytes buffered across all requests are bounded (``--max-body-bytes-in-flight``): past
  it a request is refused with 503 before it is read.
- Once the server begins to shut down, a body still arriving is refused with 503 at once.

Accepted bodies are buffered and replayed, so handlers never see a partial body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sarathi.entrypoints.openai_server.errors import APIError, error_response


class BodyLimits:
    """The limits, and the state they share across every connection of one server."""

    def __init__(
        self,
        max_bytes: int,
        read_timeout: float,
        max_in_flight: int,
        on_busy: Callable[[], None] = lambda: None,
    ) -> None:
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.max_in_flight = max_in_flight
        self.on_busy = on_busy  # a request refused because too many body bytes are held
        self.in_flight = 0  # body bytes held by requests being read or handled
        self.closing = asyncio.Event()  # set when the server begins to shut down


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lim = self.limits
        declared = _content_length(scope)
        if declared is not None and declared > lim.max_bytes:
            await _refuse(scope, receive, send, _too_large(lim.max_bytes))
            return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + lim.read_timeout
        try:
            while True:
                message = await self._receive(receive, deadline)
                if isinstance(message, APIError):
                    await _refuse(scope, receive, send, message)
                    return
                if message["type"] != "http.request":
                    return  # the client left before sending its body: nothing to answer
                body = message.get("body", b"")
                if size + len(body) > lim.max_bytes:
                    await _refuse(scope, receive, send, _too_large(lim.max_bytes))
                    return
                if lim.in_flight + len(body) > lim.max_in_flight:
                    lim.on_busy()
                    await _refuse(scope, receive, send, _busy())
                    return
                size += len(body)
                lim.in_flight += len(body)
                chunks.append(body)
                if not message.get("more_body", False):
                    break
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                return await receive()

            await self.app(scope, replay, send)
        finally:
            lim.in_flight -= size

    async def _receive(self, receive: Receive, deadline: float) -> Message | APIError:
        """The next message, or the error to answer with: the read deadline passed, or the
        server began to shut down, first."""
        lim = self.limits
        if lim.closing.is_set():
            return _shutting_down()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _timed_out(lim.read_timeout)
        message = asyncio.ensure_future(receive())
        closing = asyncio.ensure_future(lim.closing.wait())
        done, _ = await asyncio.wait(
            {message, closing}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
        )
        closing.cancel()
        if message in done:
            return message.result()
        message.cancel()
        return _shutting_down() if closing in done else _timed_out(lim.read_timeout)


def _too_large(max_bytes: int) -> APIError:
    return APIError(
        f"the request body is larger than {max_bytes} bytes", 413, code="request_too_large"
    )


def _timed_out(seconds: float) -> APIError:
    return APIError(
        f"the request body did not arrive within {seconds:g} s", 408, code="request_timeout"
    )


def _busy() -> APIError:
    return APIError(
        "the server holds too many request bodies at once; retry shortly",
        503,
        type="overloaded_error",
        code="overloaded",
        retry_after=1,
    )


def _shutting_down() -> APIError:
    return APIError("the server is shutting down", 503, type="server_error", code="shutting_down")


async def _refuse(scope: Scope, receive: Receive, send: Send, err: APIError) -> None:
    response = error_response(err)
    # The body may still be arriving: this connection is not reused.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
