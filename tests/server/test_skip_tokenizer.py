"""--skip-tokenizer-init: token ids in, token ids out; what needs text is refused by name."""

from __future__ import annotations

import json

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


def test_return_token_ids_carries_the_output_without_a_tokenizer():
    # The output's text is empty without a tokenizer: vLLM's return_token_ids is how its
    # tokens come back (before, they came back nowhere unless logprobs were asked for).
    live = start_server(engine_kwargs={"skip_tokenizer_init": True})
    body = {"prompt": [5, 6, 7], "max_tokens": 4, "ignore_eos": True, "temperature": 0,
            "return_token_ids": True}
    try:
        with httpx.Client(base_url=live.url, timeout=30) as h:
            r = h.post("/v1/completions", json=body)
            assert r.status_code == 200, r.text
            choice = r.json()["choices"][0]
            assert choice["text"] == "" and choice["prompt_token_ids"] == [5, 6, 7]
            assert len(choice["token_ids"]) == 4
            streamed, prompt_ids = [], []
            with h.stream("POST", "/v1/completions", json=body | {"stream": True}) as s:
                for line in s.iter_lines():
                    if line.startswith("data: {"):
                        c = json.loads(line[6:])["choices"][0]
                        streamed += c["token_ids"]
                        prompt_ids.append(c.get("prompt_token_ids"))
            assert streamed == choice["token_ids"]
            assert prompt_ids[0] == [5, 6, 7] and not any(prompt_ids[1:])
            plain = h.post("/v1/completions", json=body | {"return_token_ids": None}).json()
            assert plain["choices"][0]["token_ids"] is None
    finally:
        stop_server(live)
