"""Live servers for the server tests: a real uvicorn on 127.0.0.1, in a thread of this process.

The listening socket is bound (port 0: a free one) before the server thread starts, so
clients can connect at once: connections wait in the backlog until uvicorn accepts them.
Tests reach the engine through ``LiveServer.engine`` (e.g. to check that slots were freed).
(A module of its own: importing ``conftest`` by name picks whichever conftest pytest
loaded last.)
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import uvicorn

# Short contexts keep every request (and schemathesis' choices of max_tokens) quick on a CPU.
MAX_MODEL_LEN = 256
API_KEY = "test-key-123"

# A Hermes-style chat template (Qwen2.5's shape, shortened) that renders tools, tool calls
# and tool results (the ``tool_server`` fixture's, in conftest.py, and the client suite's).
HERMES_TEMPLATE = """\
{%- if tools %}<|im_start|>system
Tools:
{% for t in tools %}{{ t | tojson }}
{% endfor %}Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>
{% endif %}
{%- for m in messages %}
{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant
{{ m.content or '' }}{% for c in m.tool_calls %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif m.role == 'tool' %}<|im_start|>user
<tool_response>{{ m.content }}</tool_response><|im_end|>
{% else %}<|im_start|>{{ m.role }}
{{ m.content or '' }}<|im_end|>
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@dataclass
class LiveServer:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def engine(self) -> Any:
        """The AsyncEngine behind the app."""
        return self.app.state.sarathi.engine

    @property
    def base_url(self) -> str:
        return self.url + "/v1"


def start_server(
    engine_kwargs: dict[str, Any] | None = None, engine_hook: Any = None, **server_kwargs: Any
) -> LiveServer:
    from sarathi.config import EngineConfig
    from sarathi.engine.llm_engine import LLMEngine
    from sarathi.entrypoints.openai_server.api_server import bind_socket, build_app
    from sarathi.entrypoints.openai_server.args import server_args

    kwargs = {"model": "demo", "max_model_len": MAX_MODEL_LEN, **(engine_kwargs or {})}
    engine = LLMEngine(EngineConfig.from_kwargs(**kwargs))
    if engine_hook is not None:
        engine_hook(engine)
    app = build_app(engine, server_args(**server_kwargs))
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True
    )
    thread.start()
    return LiveServer(f"http://127.0.0.1:{port}", app, server, thread)


def stop_server(live: LiveServer) -> None:
    live.server.should_exit = True
    live.thread.join(60)
    assert not live.thread.is_alive(), "the test server did not stop"


def check_call(name: str, arguments: str) -> None:
    """A call of the tool_server tests' tools (get_weather, add) with in-schema arguments."""
    args = json.loads(arguments)
    if name == "get_weather":
        assert args["city"] in ("Paris", "Rome", "Oslo") and args["unit"] in ("c", "f")
    else:
        assert name == "add" and 0 <= args["a"] <= 99


def special_tag_model(path: Any) -> str:
    """The demo model with a tokenizer whose <tool_call> and </tool_call> are special tokens
    (as some Hermes models' are): its last two merged tokens' ids, renamed."""
    import shutil

    from sarathi.transformers_utils.demo import demo_model_path

    folder = str(path / "special-tags")
    shutil.copytree(demo_model_path(), folder)
    with open(f"{folder}/tokenizer.json") as f:
        tok = json.load(f)
    vocab, merges = tok["model"]["vocab"], tok["model"]["merges"]
    names = {i: t for t, i in vocab.items()}
    for tid, tag in ((len(vocab) - 2, "<tool_call>"), (len(vocab) - 1, "</tool_call>")):
        del vocab[names[tid]]
        vocab[tag] = tid
        tok["added_tokens"].append({"id": tid, "content": tag, "single_word": False,
                                    "lstrip": False, "rstrip": False, "normalized": False,
                                    "special": True})
    tok["model"]["merges"] = merges[:-2]  # the merges that made the two renamed tokens
    with open(f"{folder}/tokenizer.json", "w") as f:
        json.dump(tok, f)
    return folder


def health_answers_during(
    live: LiveServer, send: Any, started: threading.Event, release: threading.Event
) -> Any:
    """``send()`` (a request) in a thread, whose server-side work is held once ``started`` is
    set until ``release`` is: meanwhile /health must answer, so that work is off the event
    loop. Returns what ``send()`` returned."""
    import httpx

    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(send()))
    worker.start()
    try:
        assert started.wait(10)
        with httpx.Client(base_url=live.url, timeout=5) as other:
            assert other.get("/health").status_code == 200
    finally:
        release.set()
        worker.join(30)
    return result[0]
