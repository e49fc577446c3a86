"""--generation-config: a generation_config.json's max_new_tokens caps every request's
output tokens (vLLM's server-wide limit), whether the request sets max_tokens or not."""

from __future__ import annotations

import json

import httpx

from live_server import start_server, stop_server


def test_max_new_tokens_caps_every_request(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_new_tokens": 3}))
    live = start_server(engine_kwargs={"generation_config": str(tmp_path)})
    try:
        with httpx.Client(base_url=live.url, timeout=60) as h:
            chat = {"messages": [{"role": "user", "content": "hi"}], "ignore_eos": True}
            for path, body in (
                ("/v1/chat/completions", chat),  # no max_tokens: the rest of the context
                ("/v1/chat/completions", {**chat, "max_completion_tokens": 20}),
                ("/v1/completions", {"prompt": "hi", "max_tokens": 20, "ignore_eos": True}),
            ):
                r = h.post(path, json=body)
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["usage"]["completion_tokens"] == 3, (path, body)
                assert out["choices"][0]["finish_reason"] == "length"
            # Under the cap, a request's own max_tokens holds.
            r = h.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2, "ignore_eos": True})
            assert r.json()["usage"]["completion_tokens"] == 2
    finally:
        stop_server(live)
