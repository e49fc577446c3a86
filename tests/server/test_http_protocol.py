"""The server's HTTP protocol: uvicorn's httptools parser where it is installed, h11 where it
is not, either with the deadlines on a request's headers and on the client's reading (its
behaviour on a live server is
tests/reliability/test_reliability.py::test_half_sent_requests_time_out)."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from sarathi.entrypoints.openai_server.api_server import deadline_protocol


@contextlib.contextmanager
def serving(respond: Any, header_timeout: float, write_timeout: float) -> Iterator[int]:
    """A real uvicorn with the server's protocol, answering every request with the ASGI
    response ``respond()``; yields its port."""
    import asyncio
    import threading
    import time

    import uvicorn

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await respond()(scope, receive, send)

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=deadline_protocol(header_timeout, write_timeout),
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


def test_httptools_where_installed() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    proto = deadline_protocol(7.0, 5.0)
    assert issubclass(proto, HttpToolsProtocol) and proto.header_timeout == 7.0
    assert proto.write_timeout == 5.0


def test_h11_without_httptools(monkeypatch) -> None:
    real_import = builtins.__import__

    def no_httptools(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.endswith("httptools_impl"):
            raise ImportError("httptools is not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_httptools)
    proto = deadline_protocol(3.0, 2.0)
    assert issubclass(proto, H11Protocol) and proto.header_timeout == 3.0
    assert proto.write_timeout == 2.0


def test_a_client_that_reads_nothing_is_dropped_and_its_stream_closed() -> None:
    """A real uvicorn with the server's protocol, streaming 64 MiB to a client that takes no
    bytes: once the send buffer is full, the write deadline drops the connection and the
    response's generator is closed (for the server's streams, that aborts their requests:
    tests/reliability's disconnect test)."""
    import socket
    import threading

    from starlette.responses import StreamingResponse

    closed = threading.Event()

    async def chunks() -> Any:
        try:
            for _ in range(1024):
                yield b"x" * 65536
        finally:
            closed.set()

    with serving(lambda: StreamingResponse(chunks()), 30.0, 0.5) as port:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            client.connect(("127.0.0.1", port))
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed.wait(20), "the stream was not closed: the client still holds it"
            client.settimeout(10)
            received = 0
            try:
                while chunk := client.recv(1 << 20):
                    received += len(chunk)
            except ConnectionResetError:
                pass
            assert received < 1024 * 65536  # dropped, not finished
        finally:
            client.close()


def test_the_header_deadline_counts_from_the_last_response() -> None:
    """On a reused connection the next request has ``header_timeout`` from the previous
    response: the deadline armed when the connection opened no longer closes it while the
    next request's headers arrive."""
    import socket
    import time

    from starlette.responses import PlainTextResponse

    def response(sock: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"ok") and (chunk := sock.recv(4096)):
            data += chunk
        return data

    with serving(lambda: PlainTextResponse("ok"), 1.0, 30.0) as port:
        client = socket.create_connection(("127.0.0.1", port))
        client.settimeout(10)
        try:
            opened = time.monotonic()
            time.sleep(0.7)
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert response(client).startswith(b"HTTP/1.1 200")
            client.sendall(b"GET / HTTP/1.1\r\n")  # the next request's headers, slowly
            time.sleep(max(0.0, opened + 1.3 - time.monotonic()))  # past the first deadline
            client.sendall(b"Host: x\r\n\r\n")
            assert response(client).startswith(b"HTTP/1.1 200")
        finally:
            client.close()
