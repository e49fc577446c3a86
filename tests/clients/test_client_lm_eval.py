"""lm-eval's ``local-completions`` and ``local-chat-completions`` request shapes, sent as
lm-eval sends them (``lm_eval/models/openai_completions.py``, ``api_models.py`` and the remote
tokenizer in ``lm_eval/utils.py``), and their answers read as lm-eval reads them.

lm-eval itself (torch, datasets, many tasks) is too heavy for the suite; what matters to the
server is the HTTP traffic, which these tests reproduce field for field:

- the remote tokenizer: ``GET /tokenizer_info`` (needs ``eos_token``), ``POST /tokenize``
  ``{"prompt", "add_special_tokens": false}`` -> ``tokens``, ``POST /detokenize``
  ``{"tokens"}`` -> ``prompt``; the chat template rendered from ``chat_template``;
- loglikelihood: token-id prompts (context + continuation), ``echo``, ``max_tokens`` 1 (0 in
  older harnesses), ``logprobs`` 1, ``temperature`` 0, ``seed``; read back as
  ``sum(token_logprobs[ctxlen:-1])`` and ``is_greedy`` from ``top_logprobs``;
- generate_until: token-id (or text) prompts with ``stop`` = until + the EOS string.
"""

from __future__ import annotations

from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import httpx
import jinja2
import pytest
from clients_common import API_KEY, MODEL

SEED = 1234  # lm-eval's default
PAIRS = [
    ("The capital of France is", " Paris"),
    ("Question: 2 + 2 =", " 4"),
    ("def fib(n):", "\n    return n"),
]


@pytest.fixture(scope="module")
def http(server_url: str) -> Iterator[httpx.Client]:
    # lm-eval sends these headers on every request (the key from $OPENAI_API_KEY).
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server_url, headers=headers, timeout=60) as c:
        yield c


def _post(http: httpx.Client, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    r = http.post(url, json=payload)
    assert r.status_code == 200, r.text
    return r.json()


def encode(http: httpx.Client, text: str) -> list[int]:
    """lm-eval's RemoteTokenizer.encode."""
    tokens = _post(http, "/tokenize", {"prompt": text, "add_special_tokens": False})["tokens"]
    assert isinstance(tokens, list)
    return tokens


def test_remote_tokenizer_probe(http: httpx.Client) -> None:
    """check_remote_tokenizer_support, then what RemoteTokenizer reads."""
    info = http.get("/tokenizer_info").json()
    assert isinstance(info, dict) and "eos_token" in info
    assert isinstance(encode(http, "test"), list)
    # eos_token_id is encode(eos_token)[0]: the special token's text must be that token.
    eos = info["eos_token"]
    (eos_id,) = encode(http, eos)
    assert _post(http, "/detokenize", {"tokens": [eos_id]})["prompt"] == eos
    ids = encode(http, "Hello, world")
    assert _post(http, "/detokenize", {"tokens": ids})["prompt"] == "Hello, world"
    # apply_chat_template renders the served template with plain jinja.
    template = jinja2.Environment().from_string(info["chat_template"])
    text = template.render(messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert "Hi" in text


def _loglikelihood_payload(prompts: list[list[int]], max_tokens: int) -> dict[str, Any]:
    """LocalCompletionsAPI._create_payload(generate=False) (max_tokens 1; older: 0)."""
    return {
        "model": MODEL,
        "prompt": prompts,
        "temperature": 0,
        "max_tokens": max_tokens,
        "logprobs": 1,
        "seed": SEED,
        "echo": True,
    }


def parse_logprobs(out: dict[str, Any], ctxlens: list[int], end: int | None) -> list[Any]:
    """LocalCompletionsAPI.parse_logprobs (``end`` -1 for max_tokens 1: the last entry is
    the generated token; None for max_tokens 0)."""
    res = []
    choices = sorted(out["choices"], key=itemgetter("index"))
    for choice, ctxlen in zip(choices, ctxlens, strict=True):
        assert ctxlen > 0
        lps = choice["logprobs"]["token_logprobs"][ctxlen:end]
        tops = choice["logprobs"]["top_logprobs"][ctxlen:end]
        is_greedy = all(tok == max(top.values()) for tok, top in zip(lps, tops, strict=True))
        res.append((sum(lps), is_greedy, lps))
    return res


def _requests(http: httpx.Client) -> tuple[list[list[int]], list[int]]:
    prompts, ctxlens = [], []
    for context, continuation in PAIRS:
        ctx, cont = encode(http, context), encode(http, continuation)
        prompts.append(ctx + cont)
        ctxlens.append(len(ctx))
    return prompts, ctxlens


@pytest.mark.parametrize("max_tokens", [1, 0])
def test_loglikelihood(http: httpx.Client, max_tokens: int) -> None:
    prompts, ctxlens = _requests(http)
    out = _post(http, "/v1/completions", _loglikelihood_payload(prompts, max_tokens))
    assert len(out["choices"]) == len(prompts)
    choices = sorted(out["choices"], key=itemgetter("index"))
    for choice, prompt in zip(choices, prompts, strict=True):
        lp = choice["logprobs"]
        # One entry per prompt token (the first has nothing before it), then the output's.
        assert len(lp["token_logprobs"]) == len(prompt) + max_tokens == len(lp["tokens"])
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert all(isinstance(x, float) and x <= 0 for x in lp["token_logprobs"][1:])
        assert all(isinstance(t, dict) and 1 <= len(t) <= 2 for t in lp["top_logprobs"][1:])
    end = -1 if max_tokens == 1 else None
    for total, is_greedy, lps in parse_logprobs(out, ctxlens, end):
        assert total < 0 and isinstance(is_greedy, bool) and lps


def test_loglikelihood_is_the_same_scored_either_way(http: httpx.Client) -> None:
    """max_tokens 0 and 1 score the prompt alike, batched or one at a time."""
    prompts, ctxlens = _requests(http)
    one = parse_logprobs(
        _post(http, "/v1/completions", _loglikelihood_payload(prompts, 1)), ctxlens, -1
    )
    zero = parse_logprobs(
        _post(http, "/v1/completions", _loglikelihood_payload(prompts, 0)), ctxlens, None
    )
    single = parse_logprobs(
        _post(http, "/v1/completions", _loglikelihood_payload(prompts[:1], 0)), ctxlens[:1], None
    )
    for a, b in zip(one, zero, strict=True):
        assert a[0] == pytest.approx(b[0], abs=1e-3) and a[1] == b[1]
    assert single[0][0] == pytest.approx(zero[0][0], abs=1e-3)


def test_greedy_continuation_is_greedy(http: httpx.Client) -> None:
    """A continuation the model writes at temperature 0 scores as greedy; another does not."""
    ctx = encode(http, "Hello, my name is")
    gen = _post(
        http,
        "/v1/completions",
        {"model": MODEL, "prompt": [ctx], "max_tokens": 3, "temperature": 0, "logprobs": 1},
    )
    greedy = gen["choices"][0]["logprobs"]["tokens"]
    cont = encode(http, "".join(greedy))
    # lm-eval tokenizes the continuation's text: here it must give back the same tokens
    # (whole tokens, no partial UTF-8; true of this context on the demo model).
    assert len(cont) == len(greedy), (greedy, cont)
    out = _post(http, "/v1/completions", _loglikelihood_payload([ctx + cont], 1))
    ((_, is_greedy, _),) = parse_logprobs(out, [len(ctx)], -1)
    assert is_greedy
    other = encode(http, " zebra crossing")
    out = _post(http, "/v1/completions", _loglikelihood_payload([ctx + other], 1))
    ((_, is_greedy, _),) = parse_logprobs(out, [len(ctx)], -1)
    assert not is_greedy


def _generate_payload(prompts: Any, eos: str) -> dict[str, Any]:
    """LocalCompletionsAPI._create_payload(generate=True): until + the EOS string as stop."""
    return {
        "prompt": prompts,
        "model": MODEL,
        "max_tokens": 12,
        "temperature": 0,
        "stop": ["\n\n", "Question:", eos],
        "seed": SEED,
    }


def parse_generations(out: dict[str, Any]) -> list[str]:
    tmp: list[Any] = [None] * len(out["choices"])
    for choice in out["choices"]:
        tmp[choice["index"]] = choice["text"]
    return tmp


def test_generate_until(http: httpx.Client) -> None:
    eos = http.get("/tokenizer_info").json()["eos_token"]
    contexts = [c for c, _ in PAIRS]
    tokenized = [encode(http, c) for c in contexts]
    by_ids = parse_generations(_post(http, "/v1/completions", _generate_payload(tokenized, eos)))
    # tokenized_requests=False sends the text itself.
    by_text = parse_generations(_post(http, "/v1/completions", _generate_payload(contexts, eos)))
    alone = parse_generations(_post(http, "/v1/completions", _generate_payload(tokenized[:1], eos)))
    assert all(isinstance(t, str) for t in by_ids)
    assert by_ids == by_text and alone == by_ids[:1]
    for text in by_ids:
        assert "\n\n" not in text and "Question:" not in text and eos not in text


def test_local_chat_completions(http: httpx.Client) -> None:
    """LocalChatCompletion._create_payload: messages, stop cut to four, no logprobs."""
    eos = http.get("/tokenizer_info").json()["eos_token"]
    payload = {
        "messages": [{"role": "user", "content": "Question: 2 + 2 =\nAnswer:"}],
        "model": MODEL,
        "max_tokens": 12,
        "temperature": 0,
        "stop": ["\n\n", "Question:", eos][:4],
        "seed": SEED,
    }
    out = _post(http, "/v1/chat/completions", payload)
    tmp: list[Any] = [None] * len(out["choices"])
    for choice in out["choices"]:
        tmp[choice["index"]] = choice["message"]["content"]
    assert isinstance(tmp[0], str) and "\n\n" not in tmp[0]
