"""The OpenAI-compatible HTTP server: app factory, uvicorn runner and graceful shutdown.

python -m sarathi serve [--model M] [--host H] [--port P] [--api-key K] [engine flags]
python -m sarathi.entrypoints.openai_server.api_server --model_name M ...   (seed's line)
"""

from __future__ import annotations

if __name__ == "__main__":
    # The original launch line runs this module, whose imports (torch, transformers) and then
    # the model load take seconds: as under `python -m sarathi`, a Ctrl-C meanwhile exits 130
    # at once. Python's own handler would swallow it there and start the server anyway.
    from sarathi.__main__ import exit_on_interrupt

    exit_on_interrupt()

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

import sarathi
from sarathi.engine.async_engine import AsyncEngine
from sarathi.engine.gc_policy import tune_for_serving
from sarathi.engine.llm_engine import LLMEngine
from sarathi.entrypoints.openai_server.args import api_keys_of, check_tls, request_log_of
from sarathi.entrypoints.openai_server.auth import APIKeyMiddleware
from sarathi.entrypoints.openai_server.chat_template import load_chat_template
from sarathi.entrypoints.openai_server.errors import error_body, install_error_handlers
from sarathi.entrypoints.openai_server.limits import BodyLimits, BodySizeLimitMiddleware
from sarathi.entrypoints.openai_server.request_ids import RequestIdMiddleware
from sarathi.entrypoints.openai_server.response_store import ResponseStore
from sarathi.entrypoints.openai_server.routes import router
from sarathi.entrypoints.openai_server.serving_common import ServerState
from sarathi.entrypoints.openai_server.tool_parsers import parser_for_template
from sarathi.metrics import ServerMetrics
from sarathi.transformers_utils.chat import TemplateKwargsError, check_template_kwargs
from sarathi.transformers_utils.demo import DEMO_NOTE
from sarathi.transformers_utils.tokenizer import max_token_bytes

logger = logging.getLogger("sarathi.server")


def served_names(engine: LLMEngine, args: argparse.Namespace) -> list[str]:
    """--served-model-name's names (a list from the command line, where vLLM takes several;
    code may set one string), else the --model value."""
    names = args.served_model_name
    if isinstance(names, str):
        names = [names]
    return list(names or [engine.config.model.model])


def served_name(engine: LLMEngine, args: argparse.Namespace) -> str:
    """The name responses carry: the first served name, as vLLM's."""
    return served_names(engine, args)[0]


def tool_parser_of(
    args: argparse.Namespace, chat_template: str | None, tokenizer: Any
) -> str | None:
    chosen = args.tool_call_parser
    if chosen != "auto":
        return chosen
    template = chat_template or getattr(tokenizer, "chat_template", None)
    return parser_for_template(template if isinstance(template, str) else None)


def _warm_grammar_vocabulary(core: LLMEngine) -> None:
    """Read the vocabulary for structured outputs now (about a second for a large one),
    not when the first constrained request arrives."""
    if core.tokenizer is None:
        return
    try:
        _ = core.structured.vocabulary
    except ValueError as e:  # such requests get this message as a 400
        logger.warning("structured outputs are unavailable: %s", e)


def build_app(engine: AsyncEngine | LLMEngine, args: argparse.Namespace) -> FastAPI:
    """The FastAPI app over ``engine``; its lifespan starts and stops the engine loop."""
    if isinstance(engine, LLMEngine):
        engine = AsyncEngine(engine, request_log_of(args))
    core = engine.engine
    name, *aliases = served_names(core, args)
    capacity = core.scheduler.capacity
    metrics = ServerMetrics(
        name,
        lambda: engine.snapshot,
        args.metrics_prefix,
        max_model_len=core.max_seq_len,
        cache_info={
            "block_size": str(capacity.tokens_per_block),
            "num_gpu_blocks": str(capacity.num_blocks),
            "enable_prefix_caching": str(core.prefix_cache is not None),
        },
    )
    engine.add_observer(metrics)
    chat_template = load_chat_template(args.chat_template)
    if core.tokenizer is not None:
        try:
            check_template_kwargs(core.tokenizer, args.default_chat_template_kwargs)
        except TemplateKwargsError as e:
            raise ValueError(f"--default-chat-template-kwargs: {e}") from e
    state = ServerState(
        engine=engine,
        model_name=name,
        model_aliases=tuple(aliases),
        max_seq_len=core.max_seq_len,
        metrics=metrics,
        chat_template=chat_template,
        default_template_kwargs=dict(args.default_chat_template_kwargs),
        tool_parser=tool_parser_of(args, chat_template, core.tokenizer),
        reasoning=core.reasoning,
        description=DEMO_NOTE if core.setup.is_demo else None,
        max_prompt_bytes=(
            core.max_seq_len * max_token_bytes(core.tokenizer) if core.tokenizer else 1 << 62
        ),
        max_waiting_requests=args.max_waiting_requests,
        prompt_tokens_details=args.enable_prompt_tokens_details,
        tokens_as_ids=args.return_tokens_as_token_ids,
        force_usage=args.enable_force_include_usage,
        response_role=args.response_role,
        content_format=args.chat_template_content_format,
        body_limits=BodyLimits(
            args.max_request_bytes,
            args.request_read_timeout,
            args.max_body_bytes_in_flight,
            on_busy=lambda: metrics.count_rejected("body_bytes_in_flight"),
        ),
        responses=ResponseStore(
            args.responses_store_max_entries, int(args.responses_store_max_mb * (1 << 20))
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        warm = asyncio.ensure_future(asyncio.to_thread(_warm_grammar_vocabulary, core))
        yield
        warm.cancel()
        await state.background.shutdown()  # each is stored as cancelled, its request aborted
        # Joining the loop thread blocks; keep the event loop free while it finishes.
        await asyncio.to_thread(engine.shutdown)
        state.grammar_threads.shutdown(wait=False, cancel_futures=True)
        state.body_threads.shutdown(wait=False, cancel_futures=True)
        state.long_text_threads.shutdown(wait=False, cancel_futures=True)

    docs: dict[str, Any] = (
        {"openapi_url": None, "docs_url": None, "redoc_url": None}
        if args.disable_fastapi_docs
        else {}
    )
    app = FastAPI(
        title="sarathi",
        version=sarathi.__version__,
        lifespan=lifespan,
        description="OpenAI-compatible LLM server",
        **docs,
    )
    app.state.sarathi = state
    install_error_handlers(app, router.routes)
    app.include_router(router)
    # The last added runs first: the key is checked before a byte of the body is read.
    app.add_middleware(BodySizeLimitMiddleware, limits=state.body_limits)
    keys = api_keys_of(args)
    if keys:
        app.add_middleware(APIKeyMiddleware, api_keys=keys)
    origins = args.allowed_origins
    if origins:
        # Before the key check: a browser's preflight carries no API key and must be answered.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=args.allowed_methods,
            allow_headers=args.allowed_headers,
            allow_credentials=args.allow_credentials,
        )
    app.add_middleware(RequestIdMiddleware)
    return app


class _HeaderDeadline(asyncio.Protocol):
    """A deadline on a request's headers, for uvicorn's HTTP protocols: a connection that
    has not sent complete headers within ``header_timeout`` seconds of opening (or of its
    last response) is closed, so half-sent requests cannot pile up. The body's own deadline
    is ``BodySizeLimitMiddleware``'s. Mixed in before the protocol class, whose ``loop``,
    ``transport`` and ``cycle`` it reads."""

    header_timeout = 30.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any
    _headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        # One deadline at a time: the connection's first, left running, closed a reused
        # connection while its next request's headers were arriving.
        if self._headers_timer is not None:
            self._headers_timer.cancel()
        self._headers_timer = self.loop.call_later(self.header_timeout, self._headers_due)

    def _headers_due(self) -> None:
        waiting_for_headers = self.cycle is None or self.cycle.response_complete
        if waiting_for_headers and not self.transport.is_closing():
            self.transport.close()


class _WriteDeadline(asyncio.Protocol):
    """A deadline on a client's reading, for uvicorn's HTTP protocols: once the connection's
    send buffer is full (the transport pauses writing: the client takes no bytes, or takes
    them too slowly to drain it), the client has ``write_timeout`` seconds to read it down;
    then the connection is dropped. Its response ends as if the client had left: a stream's
    requests are aborted and their slots freed, where a client that never reads used to
    hold them (and its queued outputs) until it went away. Mixed in before the protocol
    class, whose ``loop`` and ``transport`` it reads."""

    write_timeout = 60.0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    _write_due: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_due is None:
            self._write_due = self.loop.call_later(self.write_timeout, self._drop_reader)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_write_deadline()
        super().connection_lost(exc)

    def _cancel_write_deadline(self) -> None:
        if self._write_due is not None:
            self._write_due.cancel()
            self._write_due = None

    def _drop_reader(self) -> None:
        self._write_due = None
        if not self.transport.is_closing():
            peer = self.transport.get_extra_info("peername")
            logger.warning(
                "dropped the connection of %s: it read nothing of its response for %g s "
                "(--response-write-timeout)",
                f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a client",
                self.write_timeout,
            )
            self.transport.abort()


# The most bytes of a request line and headers taken: more gets 431 and the connection closed.
MAX_HEADER_BYTES = 64 * 1024


class _HeaderSizeLimit(asyncio.Protocol):
    """A bound on a request's line and headers, for uvicorn's httptools protocol. httptools
    takes headers of any size and joins a long one piece by piece on the event loop (time
    quadratic in its length: a 60 MB header stalled every stream for seconds). Mixed in
    before the protocol class, whose parser callbacks mark where headers end. (h11 bounds
    them itself, at uvicorn's ``h11_max_incomplete_event_size``.)"""

    max_header_bytes = MAX_HEADER_BYTES
    transport: asyncio.Transport
    server_state: Any

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""  # the last bytes of headers read, where "\r\n\r\n" may start

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            # Count only up to where the headers end: the read that completes them may
            # carry body bytes, and a whole oversized head may arrive in one read.
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._header_bytes += len(data) if end < 0 else end + 4 - len(self._tail)
            self._tail = seen[-3:]
            if self._header_bytes > self.max_header_bytes:
                # Refused before the parser sees it, so it never joins an oversized header.
                if not self.transport.is_closing():
                    self._refuse_headers()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()  # type: ignore[misc]

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""

    def _refuse_headers(self) -> None:
        message = f"the request line and headers are over {self.max_header_bytes} bytes"
        error = error_body(message, "invalid_request_error", code="request_header_fields_too_large")
        body = json.dumps(error).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def deadline_protocol(header_timeout: float, write_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol (its C parser) where httptools is installed, with the
    bound on headers, else its h11 protocol; either with the header and write deadlines."""
    bases: tuple[type[asyncio.Protocol], ...]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        bases = (_HeaderDeadline, _WriteDeadline, _HeaderSizeLimit, HttpToolsProtocol)
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        bases = (_HeaderDeadline, _WriteDeadline, H11Protocol)
    return type(
        "DeadlineHTTP",
        bases,
        {"header_timeout": header_timeout, "write_timeout": write_timeout},
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, plus a graceful shutdown: on SIGINT/SIGTERM ``on_drain`` runs on the event
    loop (stop accepting requests, let running ones finish for a while), and the process
    exits 0. A second signal exits at once, after ``on_force`` (thread-safe) has ended every
    stream.

    uvicorn re-raises a captured signal after shutting down (so the process dies of it);
    a server that shut down cleanly on request should exit 0 instead. ``exit_failed`` shuts
    it down after the engine died.
    """

    def __init__(
        self, config: uvicorn.Config, on_drain: Callable[[], None], on_force: Callable[[], None]
    ) -> None:
        super().__init__(config)
        self._on_drain = on_drain
        self._on_force = on_force
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets=sockets)
        if self.force_exit:
            # uvicorn skips the app's shutdown on a forced exit, and asyncio then cancels the
            # lifespan task still waiting for it, which uvicorn logs as a traceback. Every
            # stream has ended (on_force), so the app's shutdown (the engine loop's) is quick.
            await self.lifespan.shutdown()

    def exit_failed(self) -> None:
        """Shut down because the engine died (thread-safe). Every stream already holds its
        error, so there is nothing to wait for: a supervisor restarts a server that exits,
        not one that stays up refusing every request."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(setattr, self, "should_exit", True)

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        if self.should_exit:  # a second signal: no more waiting
            self._on_force()
            self.force_exit = True
            return
        super().handle_exit(sig, frame)
        if self._loop is not None and not self._loop.is_closed():
            # A signal handler interrupts arbitrary code: hand the work to the event loop.
            self._loop.call_soon_threadsafe(self._on_drain)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


# The open files the server asks for (vLLM asks for as many: set_ulimit).
OPEN_FILES_TARGET = 65535


def raise_open_files_limit(target: int = OPEN_FILES_TARGET) -> None:
    """Raise the soft limit on open files towards ``target`` (at most the hard limit). Each
    connection holds a file descriptor, and a connection may idle for
    --request-read-timeout before it sends a byte: at the usual soft limit of 1,024, one
    client holding 1,100 idle connections had every other client's connections reset until
    its own were closed."""
    try:
        import resource
    except ImportError:  # not a POSIX system: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:
        logger.warning(
            "the limit on open files is %d, which bounds the connections served at once, "
            "and it could not be raised (%s); raise it with ulimit -n",
            soft,
            e,
        )


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def startup_line(engine: LLMEngine, name: str, url: str) -> str:
    from sarathi.model_executor.attention import resolve_attention_backend

    cfg, m = engine.config, engine.setup
    backend_name = resolve_attention_backend(cfg.attention.attention_backend, m.device)
    cap = engine.scheduler.capacity
    plan = engine.cache_plan  # the plan, not cache_stats: ranks in other processes hold those
    model = f"{name!r} from {m.path}"
    if m.is_demo:
        model += f" ({DEMO_NOTE})"
    return (
        f"sarathi {sarathi.__version__} serving {model} on {url} | dtype "
        f"{str(m.dtype).removeprefix('torch.')}, device {m.device}, attention "
        f"{backend_name}, KV cache {plan.backend}/{plan.layout}: "
        f"{engine.scheduler.max_running} slots, {cap.max_tokens} tokens, context "
        f"{engine.max_seq_len}"
    )


def run_server(args: argparse.Namespace) -> int:
    from sarathi.entrypoints.cli_args import config_from_args

    config = config_from_args(args)
    check_tls(args)
    request_log = request_log_of(args)
    raise_open_files_limit()
    sock = bind_socket(args.host, args.port)
    try:
        engine = LLMEngine(config)
        async_engine = AsyncEngine(engine, request_log)
        app = build_app(async_engine, args)
        tune_for_serving()  # after start-up: what it built stays out of every collection
        host, port = sock.getsockname()[:2]
        scheme = "https" if args.ssl_certfile else "http"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        url = f"{scheme}://{where}"
        print(startup_line(engine, served_name(engine, args), url), flush=True)
        grace = args.graceful_shutdown_seconds
        uv_config = uvicorn.Config(
            app,
            log_level=args.log_level,
            lifespan="on",
            http=deadline_protocol(args.request_read_timeout, args.response_write_timeout),
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,  # where h11 parses
            # uvicorn cancels what is left only after the engine has ended it cleanly.
            timeout_graceful_shutdown=grace + 5,
            access_log=not args.disable_uvicorn_access_log,
            root_path=args.root_path,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            ssl_ca_certs=args.ssl_ca_certs,
            ssl_cert_reqs=args.ssl_cert_reqs,
        )
        state: ServerState = app.state.sarathi

        def drain() -> None:
            """Stop accepting, refuse bodies still arriving, end what still runs at the
            deadline with an error event."""
            state.body_limits.closing.set()
            async_engine.stop_accepting()
            asyncio.get_running_loop().call_later(grace, async_engine.begin_shutdown)

        server = GracefulServer(uv_config, drain, async_engine.begin_shutdown)
        async_engine.on_death(lambda error: server.exit_failed())
        server.run(sockets=[sock])
    finally:
        sock.close()
    if async_engine.error is None:
        print("sarathi server stopped", flush=True)
        return 0
    error = async_engine.error
    print(
        f"sarathi server stopped: its engine failed ({type(error).__name__}: {error})",
        file=sys.stderr,
        flush=True,
    )
    if engine.setup.device.type == "cuda":
        # A device error poisons the CUDA context: torch's finalizers would abort the
        # interpreter on the way out. Leave now.
        logging.shutdown()
        os._exit(1)
    return 1


def main(argv: list[str] | None = None) -> int:
    """The original Sarathi launch line: ``python -m sarathi serve`` under another name, so
    both take the same flags and handle errors and Ctrl-C alike."""
    from sarathi.entrypoints.cli import main as cli_main

    return cli_main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
