"""--skip-tokenizer-init: token ids in, token ids out; what needs text is refused by name."""

from __future__ import annotations

import httpx

from live_server import start_server, stop_server


def test_token_ids_only():
    live = start_server(engine_kwargs={"skip_tokenizer_init": True})
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            r = h.post(
                "/v1/completions",
                json={"prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True, "logprobs": 1},
            )
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["text"] == "" and len(choice["logprobs"]["tokens"]) == 3
            assert choice["logprobs"]["tokens"][0].startswith("token_id:")
            for path, body in (
                ("/v1/completions", {"prompt": "text"}),
                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ):
                r = h.post(path, json=body)
                assert r.status_code == 400 and "--skip-tokenizer-init" in r.text
    finally:
        stop_server(live)
