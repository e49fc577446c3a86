"""Flags of the HTTP server (the engine's flags are added from the config dataclasses)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from sarathi.engine.request_log import RequestLog
from sarathi.entrypoints.openai_server.chat_template import load_chat_template
from sarathi.entrypoints.openai_server.response_store import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_MB
from sarathi.entrypoints.openai_server.tool_parsers import TOOL_PARSERS
from sarathi.entrypoints.vllm_compat import NO_OP_OPTIONS
from sarathi.envs import env
from sarathi.metrics import METRICS_PREFIXES
from sarathi.transformers_utils.chat import CONTENT_FORMATS


def add_server_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("server options")
    g.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: 127.0.0.1).")
    g.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="Port to listen on; 0 picks a free one (default: 8000).",
    )
    g.add_argument(
        "--api-key",
        nargs="+",
        type=_key,
        default=None,
        metavar="KEY",
        help="Require 'Authorization: Bearer KEY' on the API routes; as in vLLM, several may "
        "be given: any of them is accepted (default: none; also read from $SARATHI_API_KEY).",
    )
    g.add_argument(
        "--served-model-name",
        nargs="+",
        type=_name,
        default=None,
        metavar="NAME",
        help="Model name clients use; as in vLLM, several may be given: each is accepted and "
        "listed, and responses carry the first (default: the --model value).",
    )
    g.add_argument(
        "--metrics-prefix",
        choices=METRICS_PREFIXES,
        default=METRICS_PREFIXES[0],
        help="Prefix of the /metrics names: 'vllm' gives vLLM's names (vllm:num_requests_"
        "running, vllm:time_to_first_token_seconds, ...), so that dashboards and alerts "
        "written for vLLM read this server unchanged (default: sarathi).",
    )
    g.add_argument(
        "--chat-template",
        default=None,
        type=_chat_template,
        help="Jinja chat template: a file, or the template's text as vLLM takes it "
        "(default: the tokenizer's).",
    )
    g.add_argument(
        "--chat-template-content-format",
        choices=CONTENT_FORMATS,
        default="auto",
        help="How a message's content reaches the chat template, as vLLM's flag: 'string' "
        "(its text parts joined), 'openai' (a list of text parts, for templates that loop "
        "over them), 'auto' the one the template reads (default: auto).",
    )
    g.add_argument(
        "--default-chat-template-kwargs",
        type=_json_object,
        default={},
        metavar="JSON",
        help="Chat template variables of every chat request, as vLLM's flag (e.g. "
        "'{\"enable_thinking\": false}'); a request's chat_template_kwargs win over them "
        "(default: none).",
    )
    g.add_argument(
        "--tool-call-parser",
        default="auto",
        choices=("auto", *TOOL_PARSERS),
        help="Format of the tool calls the model writes, parsed for tool_choice 'auto': "
        "'hermes' (<tool_call> blocks: Qwen2.5, Qwen3, Hermes), 'llama3_json' (Llama 3.1+ "
        "JSON calls); 'auto' reads it from the chat template (default: auto).",
    )
    g.add_argument(
        "--enable-auto-tool-choice",
        action="store_true",
        help="Accepted for vLLM command lines: tool_choice 'auto' is on whenever the "
        "tool-call format is known (see --tool-call-parser).",
    )
    g.add_argument(
        "--allowed-origins",
        type=_json_list,
        default=[],
        help="CORS: origins browsers may call the API from, as a JSON list "
        "('[\"https://app.example\"]', '[\"*\"]'); default none: no CORS headers.",
    )
    g.add_argument(
        "--allowed-methods",
        type=_json_list,
        default=["*"],
        help='CORS: allowed methods, a JSON list (default: ["*"]; only with --allowed-origins).',
    )
    g.add_argument(
        "--allowed-headers",
        type=_json_list,
        default=["*"],
        help='CORS: allowed request headers, a JSON list (default: ["*"]; only with '
        "--allowed-origins).",
    )
    g.add_argument(
        "--allow-credentials",
        action="store_true",
        help="CORS: let browsers send credentials (cookies, Authorization) cross-origin.",
    )
    g.add_argument(
        "--enable-prompt-tokens-details",
        action="store_true",
        help="Report usage.prompt_tokens_details.cached_tokens (prompt tokens served from the "
        "prefix cache) on chat and completions, as vLLM's flag does; the Responses API always "
        "reports input_tokens_details.cached_tokens.",
    )
    g.add_argument(
        "--response-role",
        type=_role,
        default="assistant",
        help="The role of chat replies to a new turn, as vLLM's flag; a reply that continues "
        "the last message (add_generation_prompt false) takes that message's role "
        "(default: assistant).",
    )
    g.add_argument(
        "--enable-force-include-usage",
        action="store_true",
        help="Every streamed completion and chat completion ends with a usage chunk, as if "
        "it had asked for stream_options.include_usage, as vLLM's flag.",
    )
    g.add_argument(
        "--return-tokens-as-token-ids",
        action="store_true",
        help='Logprobs name each token "token_id:<id>" instead of its text, as vLLM\'s flag '
        "(tokens whose text is not whole, such as part of a character, stay told apart); a "
        "request's return_tokens_as_token_ids overrides it.",
    )
    g.add_argument(
        "--max-request-bytes",
        type=_bounded(int, positive=True),
        default=4 * 1024 * 1024,
        help="Largest accepted request body in bytes (default: 4 MiB).",
    )
    g.add_argument(
        "--request-read-timeout",
        type=_bounded(float, positive=True),
        default=30.0,
        help="Seconds a client has to send a request's headers, and then its whole body; a "
        "late request is answered 408 (body) or its connection closed (headers) "
        "(default: 30).",
    )
    g.add_argument(
        "--response-write-timeout",
        type=_bounded(float, positive=True),
        default=60.0,
        help="Seconds a response may wait on a client that reads none of it (the connection's "
        "send buffer full) before the connection is dropped and its requests aborted, as if "
        "the client had left (default: 60).",
    )
    g.add_argument(
        "--max-body-bytes-in-flight",
        type=_bounded(int, positive=True),
        default=256 * 1024 * 1024,
        help="Request body bytes the server holds at once across all connections; past it a "
        "request is refused with 503 and Retry-After (default: 256 MiB).",
    )
    g.add_argument(
        "--max-waiting-requests",
        type=_bounded(int, positive=False),
        default=1024,
        help="Requests that may wait for a slot beyond those running (each sample, prompts "
        "times n, counts as one); past it a request is refused at once with 503, Retry-After "
        "and OpenAI's overloaded_error; but while one client (an API key, or an address) "
        "holds more than half of the requests in flight, a client with none in flight is "
        "still taken (up to twice the bound), so one client's flood cannot lock the others "
        "out; 0: no bound (default: 1024).",
    )
    g.add_argument(
        "--responses-store-max-entries",
        type=_bounded(int, positive=False),
        default=DEFAULT_MAX_ENTRIES,
        help="Responses the Responses API keeps in memory (store, previous_response_id, "
        "GET /v1/responses/{id}); past it the least recently used go first; 0 turns the "
        f"store off (default: {DEFAULT_MAX_ENTRIES}).",
    )
    g.add_argument(
        "--responses-store-max-mb",
        type=_bounded(float, positive=False),
        default=float(DEFAULT_MAX_MB),
        help="MiB of JSON the stored responses (each with its conversation's input items) "
        "may hold in all; past it the least recently used go first; 0 turns the store off "
        f"(default: {DEFAULT_MAX_MB}).",
    )
    g.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="Server log level (default: info).",
    )
    g.add_argument(
        "--uvicorn-log-level",
        dest="log_level",
        choices=("critical", "error", "warning", "info", "debug"),
        help="vLLM's name for --log-level.",
    )
    g.add_argument(
        "--enable-log-requests",
        action="store_true",
        help="Log a line for each request taken: its id, prompt (see --max-log-len) and "
        "sampling parameters, as vLLM's flag. Off by default: prompts are users' data.",
    )
    g.add_argument(
        "--enable-log-outputs",
        action="store_true",
        help="With --enable-log-requests, also a line for each finished output: its finish "
        "reason, token count and text.",
    )
    g.add_argument(
        "--disable-uvicorn-access-log",
        action="store_true",
        help="No log line for each HTTP request (uvicorn's access log, on by default).",
    )
    g.add_argument(
        "--root-path",
        default="",
        help="The path prefix a proxy serves the API under and strips before it forwards a "
        "request, as vLLM's flag (the ASGI root_path, e.g. /llm): links the server makes, "
        "such as /docs' link to the OpenAPI document, carry it (default: none).",
    )
    g.add_argument(
        "--disable-fastapi-docs",
        action="store_true",
        help="Serve no /docs, /redoc or /openapi.json, as vLLM's flag.",
    )
    g.add_argument(
        "--ssl-certfile",
        default=None,
        help="Serve HTTPS with this certificate chain (PEM), as vLLM's flag; the private key "
        "may be in the same file, else --ssl-keyfile (default: plain HTTP).",
    )
    g.add_argument("--ssl-keyfile", default=None, help="The private key (PEM) of --ssl-certfile.")
    g.add_argument(
        "--ssl-ca-certs",
        default=None,
        help="CA certificates (PEM) that clients' certificates are checked against (see "
        "--ssl-cert-reqs).",
    )
    g.add_argument(
        "--ssl-cert-reqs",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="Client certificates, as Python's ssl module numbers them: 0 not asked for, 1 "
        "checked where sent, 2 required (default: 0). 1 and 2 need --ssl-ca-certs.",
    )
    g.add_argument(
        "--graceful-shutdown-seconds",
        type=_bounded(float, positive=False),
        default=30.0,
        help="On SIGINT/SIGTERM, stop accepting requests and let running ones finish for "
        "at most this long, then end the rest with an error event; a second signal exits at "
        "once (default: 30).",
    )

    _add_vllm_compat_args(parser)


def _add_vllm_compat_args(parser: argparse.ArgumentParser) -> None:
    """vLLM flags that change nothing here, taken so vLLM command lines run unchanged. Each
    takes only the values that mean what this server does anyway; others are refused."""
    g = parser.add_argument_group(
        "vLLM command-line compatibility (accepted; they change nothing here)"
    )
    for option in NO_OP_OPTIONS:
        if option.kind == "unset":  # no value on a command line means "unset"
            continue
        if option.kind in ("bool", "true"):
            g.add_argument(option.flag, action="store_true", help=f"Accepted: {option.why}.")
        elif option.kind == "number":
            g.add_argument(
                option.flag,
                type=_bounded(float, positive=False),
                help=f"Accepted: {option.why}.",
            )
        else:
            g.add_argument(
                option.flag,
                choices=option.only,
                help=f"Only {' or '.join(map(repr, option.only))}: {option.why}.",
            )
    g.add_argument(
        "--disable-frontend-multiprocessing",
        action="store_true",
        help="Accepted: the server and engine share one process.",
    )
    g.add_argument(
        "--max-log-len",
        type=_bounded(int, positive=False),
        default=None,
        help="The most characters of a prompt or output (ids of a token-id prompt) a "
        "request's log line shows (default: all); see --enable-log-requests.",
    )


def _json_list(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise argparse.ArgumentTypeError(
            f"expected a JSON list of strings, like '[\"https://a.example\"]', got {text!r}"
        )
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object, like '{{\"enable_thinking\": false}}', got {text!r}"
        )
    return value


def _chat_template(text: str) -> str:
    """The flag's value as given (a file or the template's text), once it reads as either:
    a wrong path fails here, not after the model has loaded."""
    try:
        load_chat_template(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--chat-template: ")) from None
    return text


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535 (0: any free one), got {port}")
    return port


def _nonempty(what: str, otherwise: str) -> Callable[[str], str]:
    """A flag's parser refusing an empty value, which an unset shell variable gives
    (`--api-key "$KEY"`): an empty key turned authentication off without a word, and an
    empty served name made every client's model name a 404."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(
                f"the {what} is empty (an unset shell variable?); leave the flag out to {otherwise}"
            )
        return text

    parse.__name__ = what  # argparse names the type in some messages
    return parse


_nonempty_key = _nonempty("key", "serve without a key")


def _key(text: str) -> str:
    """An API key, which is not a model folder: --api-key takes several keys, so in
    ``serve --api-key KEY path/to/model`` the folder would become a second key and the demo
    model be served instead."""
    key = _nonempty_key(text)
    if os.path.isfile(os.path.join(key, "config.json")):
        raise argparse.ArgumentTypeError(
            f"{key!r} is a model folder, not a key (--api-key takes every value after it); "
            "put the model before --api-key, or give it with --model"
        )
    return key


_key.__name__ = "key"
_name = _nonempty("name", "serve under the --model value")
_role = _nonempty("role", "reply as assistant")


def _bounded(kind: Callable[[str], Any], positive: bool) -> Callable[[str], Any]:
    """A flag's parser for a number that must be > 0 (``positive``) or >= 0: a bound whose
    value would refuse every request (a 0-byte body limit, a negative timeout) is an error."""
    rule = "> 0" if positive else ">= 0"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value > 0 if positive else value >= 0):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    parse.__name__ = f"{kind.__name__} {rule}"  # shown in docs/configuration.md
    return parse


def request_log_of(args: argparse.Namespace) -> RequestLog | None:
    """The request log the flags ask for (None: none); ValueError for --enable-log-outputs
    alone, which would log nothing."""
    if args.enable_log_outputs and not args.enable_log_requests:
        raise ValueError("--enable-log-outputs needs --enable-log-requests")
    if not args.enable_log_requests:
        return None
    return RequestLog(args.max_log_len, args.enable_log_outputs)


def check_tls(args: argparse.Namespace) -> None:
    """ValueError, before any model loads, for TLS flags that cannot serve: a key or CA
    file without a certificate, client checks without CAs, or files that do not load."""
    given = [n for n in ("ssl_keyfile", "ssl_ca_certs") if getattr(args, n)]
    if args.ssl_cert_reqs:
        given.append("ssl_cert_reqs")
    if args.ssl_certfile is None:
        if given:
            flags = ", ".join("--" + n.replace("_", "-") for n in given)
            verb = "needs" if len(given) == 1 else "need"
            raise ValueError(f"{flags} {verb} --ssl-certfile (the server's certificate)")
        return
    if args.ssl_cert_reqs and not args.ssl_ca_certs:
        raise ValueError("--ssl-cert-reqs 1 or 2 needs --ssl-ca-certs to check clients against")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        if args.ssl_ca_certs:
            context.load_verify_locations(args.ssl_ca_certs)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot serve HTTPS with the --ssl-* files given: {e}") from e


def server_args(**overrides: Any) -> argparse.Namespace:
    """The server flags' defaults as a namespace (for building an app in code or tests)."""
    parser = argparse.ArgumentParser()
    add_server_args(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def api_keys_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The keys a request may carry; none: the API is open."""
    given = args.api_key
    if isinstance(given, str):  # server_args(api_key="k"), as code building an app sets it
        given = [given]
    if given:
        return tuple(given)
    from_env = env("SARATHI_API_KEY")
    return (from_env,) if from_env else ()
