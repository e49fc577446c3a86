"""Differential fuzzing of the engine on the CPU: random engine configurations must give
every request what the plainest configuration gives it.

A case (one seed) draws a tiny random-weight model (or tiny Llama served with an AdaptiVocab
patch tokenizer) and a workload: prompts that share prefixes, repeat, or extend each other
across block boundaries; greedy, seeded and unseeded requests with n > 1, logprobs, prompt
logprobs, penalties, logit bias, allowed tokens, bad words, stop tokens and stop strings,
structured outputs; cache salts; final-only, snapshot and delta streams. The reference runs
it with a dense cache, no prefix caching and a 512-token budget, every request added at
once. Then each drawn configuration (scheduler, token budget, slots, prefix caching, cache
backend, layout and page size, paged blocks, overlapped scheduling, a KV budget small enough
to preempt, TP=2 or the mp executor) runs the same requests through the step API with
staggered arrivals, aborts (some re-added under the same id) and prefix-cache resets. Greedy
and seeded requests must match the reference in tokens, text, finish and stop reasons and
logprobs (to 1e-4; rounding moves with the batch's shape, so tokens may part where the
reference's logprobs show its two best within 1e-5, and tied logprobs may swap in a top-k
list); unseeded ones only have to finish. After every run the engine must be idle (no
requests, every slot and block free, no cached block still referenced), streamed deltas must
add up to the final output, and an aborted request must produce nothing more. The reference
itself is checked against the stop rules (stop tokens against min_tokens, stop strings with
and without include_stop_str_in_output), max_tokens, ignore_eos, logprob counts, finished
structured outputs against their constraints, transformers' greedy tokens, and a request run
alone.

With ``--device cuda`` the configurations are the GPU's (vAttention's CUDA backend with its
page sizes, CUDA graphs or eager steps, Triton kernels) and the comparison allows for what
differs there by design: the same token's logprob may move by rounding (float32 matmuls
and attention differ with the batch's shape), so greedy requests ask for their two best
tokens and may part from the reference where those two were within ``GPU_TIE`` nats;
seeded requests and those whose logits are processed (constraints, biases, penalties) only
have to finish, and transformers is not consulted.

    python tests/engine_fuzz.py --minutes 10        # cases 0, 1, ... until time runs out
    python tests/engine_fuzz.py --case 17 -v        # one case, each configuration logged
    python tests/engine_fuzz.py --device cuda --minutes 5 --no-processes
    python tests/engine_fuzz.py --set executor=mp --set enable_prefix_caching=true
    python tests/engine_fuzz.py --set scheduling_policy=priority   # requests of 5 priorities

``tests/test_engine_fuzz.py`` runs a fixed set of cases in the CPU suite; a finding there
names the case to rerun here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

if __name__ == "__main__":
    # Run as a script, tests/ comes first on the path: the repository root goes before it, so
    # that test folders named like the packages (tests/adaptivocab) do not shadow them.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import ARCHS, hf_greedy, hf_model, save_tiny_model  # noqa: E402

from sarathi import LLM, SamplingParams  # noqa: E402
from sarathi.sampling_params import StructuredOutputsParams  # noqa: E402
from sarathi.engine.llm_engine import LLMEngine  # noqa: E402
from sarathi.outputs import DeltaAccumulator, RequestOutput  # noqa: E402

VOCAB = 384  # tests/models.py's tiny models
CONTEXT = 512
EOS = 2
# Parameters that change which token wins: requests with any of them are left out of the
# checks that assume the model's own greedy choice.
SHAPING = ("stop", "stop_token_ids", "min_tokens", "repetition_penalty", "presence_penalty",
           "frequency_penalty", "logit_bias", "allowed_token_ids", "bad_words",
           "structured_outputs")
REFERENCE = {"kv_cache_backend": "dense", "enable_prefix_caching": False, "chunk_size": 512,
             "scheduler": "sarathi", "seed": 0}
# Constrained requests (structured outputs) and what their finished text must satisfy.
CONSTRAINTS = (
    StructuredOutputsParams(regex=r"[a-z]{1,8}( [a-z]{1,8}){0,3}"),
    StructuredOutputsParams(choice=("yes", "no", "maybe so")),
    StructuredOutputsParams(json={"type": "object", "properties": {
        "a": {"type": "integer"}, "b": {"type": "string", "maxLength": 5}},
        "required": ["a"], "additionalProperties": False}),
)
# On a GPU: how far apart (in logprob) two tokens may be for rounding to swap them, and how
# far a logprob may move.
GPU_TIE = 2e-2
GPU_LOGPROB_TOL = 2e-2


@dataclass(frozen=True)
class FuzzModel:
    """A model folder, and the engine options it is served with (a patch tokenizer)."""

    path: str
    engine: dict[str, Any] = field(default_factory=dict)


# The tiny models' architectures, and tiny Llama served with an AdaptiVocab patch tokenizer
# (its swapped rows re-initialised at load, its text decoded through the patch).
MODELS = (*ARCHS, "llama+adaptivocab")


@dataclass
class Request:
    prompt: list[int]
    params: dict[str, Any]  # SamplingParams keyword arguments
    kind: str  # "greedy", "seeded" (compared with the reference) or "noise" (only finishes)
    origin: str  # how the prompt relates to the others
    salt: str | None
    stream: str  # "final", "snapshot" or "delta"
    expect: dict[str, Any] | None = None  # a stop the request was given: what must happen

    def sampling(self) -> SamplingParams:
        return SamplingParams(**self.params)

    @property
    def shaped(self) -> bool:
        return any(self.params.get(k) for k in SHAPING)


@dataclass
class Result:
    error: str | None
    samples: list[dict[str, Any]]
    prompt_logprobs: list[dict[int, float] | None] | None


@dataclass
class Run:
    results: dict[int, Result] = field(default_factory=dict)
    aborted: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    mode: str
    phases: list[list[tuple[int, int]]]  # per phase: (arrival step, request index)
    aborts: list[tuple[int, int, int]]  # (step, phase, request index)
    readd: set[int]  # aborted requests added again under the same id
    resets: set[int]  # steps before which the prefix cache is reset


@dataclass
class Finding:
    case: int
    kind: str
    detail: str
    config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the workload ------------------------------------------------------------------------------
def _tokens(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(3, VOCAB) for _ in range(n)]


def _near_boundary(rng: random.Random) -> int:
    return max(1, rng.choice([8, 16, 32, 64]) * rng.randint(1, 4) + rng.choice([-1, 0, 0, 1]))


def _prompts(rng: random.Random, count: int) -> list[tuple[list[int], str]]:
    prefixes = [_tokens(rng, _near_boundary(rng)) for _ in range(rng.randint(1, 3))]
    out: list[tuple[list[int], str]] = []
    for _ in range(count):
        r = rng.random()
        if r < 0.2 or not out:
            out.append((_tokens(rng, rng.choice([1, 2, rng.randint(3, 120)])), "random"))
        elif r < 0.55:
            tail = rng.choice([0, 1, rng.randint(1, 40), _near_boundary(rng)])
            out.append((rng.choice(prefixes) + _tokens(rng, tail), "prefix+tail"))
        elif r < 0.7:
            out.append((list(rng.choice(out)[0]), "duplicate"))
        elif r < 0.85:
            src = rng.choice(out)[0]
            if len(src) > 2:
                cut = min(max(1, rng.choice([_near_boundary(rng), rng.randint(1, len(src))])),
                          len(src) - 1)
                out.append((src[:cut], "prefix-of"))
            else:
                out.append((src + _tokens(rng, _near_boundary(rng)), "extension"))
        else:
            out.append((rng.choice(out)[0] + _tokens(rng, rng.randint(1, 40)), "extension"))
    return out


def _params(rng: random.Random) -> tuple[dict[str, Any], str]:
    kw: dict[str, Any] = {"max_tokens": rng.choice([1, 2, rng.randint(3, 12),
                                                    rng.randint(13, 40)])}
    r = rng.random()
    if r < 0.5:
        kind = "greedy"
        kw["temperature"] = 0.0
        kw["n"] = 2 if rng.random() < 0.2 else 1
    elif r < 0.85:
        kind = "seeded"
        kw["temperature"] = rng.choice([1.0, 1.0, 0.7, 1.5])
        kw["top_p"] = rng.choice([1.0, 0.9, 0.5])
        kw["top_k"] = rng.choice([-1, -1, 5, 50])
        kw["min_p"] = rng.choice([0.0, 0.0, 0.05])
        kw["seed"] = rng.randrange(2**63) if rng.random() < 0.3 else rng.randrange(10_000)
        kw["n"] = rng.choice([1, 1, 1, 2, 3])
    else:
        kind = "noise"
        kw["temperature"] = 1.0
        kw["n"] = rng.choice([1, 2])
    kw["ignore_eos"] = rng.random() < 0.7
    if rng.random() < 0.35:
        kw["logprobs"] = rng.choice([0, 1, 2, 5])
    if rng.random() < 0.08:
        kw["prompt_logprobs"] = rng.choice([0, 1, 3])
    if rng.random() < 0.12:
        kw["repetition_penalty"] = rng.choice([1.2, 1.5])
        kw["presence_penalty"] = rng.choice([0.0, 0.5])
        kw["frequency_penalty"] = rng.choice([0.0, 0.3])
    if rng.random() < 0.1:
        kw["min_tokens"] = rng.randint(0, kw["max_tokens"])
    if rng.random() < 0.12:  # EOS made likely: stops at EOS, against min_tokens
        kw["logit_bias"] = {EOS: rng.choice([2.0, 4.0, 8.0])}
        kw["ignore_eos"] = False
        if rng.random() < 0.5:
            kw["min_tokens"] = rng.randint(0, kw["max_tokens"])
    if rng.random() < 0.04:
        kw["allowed_token_ids"] = sorted(rng.sample(range(VOCAB), rng.randint(1, 20)))
    if rng.random() < 0.04:
        kw["bad_words"] = [rng.choice(["the", "cache", " a", "sch", "e", "ing"])]
    if rng.random() < 0.1:
        kw["structured_outputs"] = rng.choice(CONSTRAINTS)
    if rng.random() < 0.1:
        kw["skip_special_tokens"] = False  # "</s>" and the like stay in the text
    return kw, kind


def _with_stop(rng: random.Random, req: Request, unstopped: dict[str, Any]) -> None:
    """Give a greedy request whose unstopped output is known a stop token or a stop string
    taken from that output, and record what must happen."""
    ids, text = unstopped["ids"], unstopped["text"]
    if len(ids) < 3:
        return
    kw = {k: v for k, v in req.params.items() if k not in SHAPING and k != "n"}
    kw["ignore_eos"] = True
    if rng.random() < 0.5:
        token = ids[rng.randrange(len(ids))]
        first = ids.index(token)
        min_tokens = min(rng.choice([0, 0, first, first + 1, first + 2]), kw["max_tokens"] or CONTEXT)
        kw["stop_token_ids"] = [token]
        if min_tokens:
            kw["min_tokens"] = min_tokens
        req.params = kw
        req.expect = {"stop_token": token, "first": first, "min_tokens": min_tokens,
                      "ids": ids}
        return
    starts = [k for k in range(len(text) - 2) if text[k:k + 2].isascii() and text[k:k + 2].strip()]
    if not starts:
        return
    k = rng.choice(starts)
    stop = text[k:k + rng.choice([1, 2, 3])]
    if not stop.strip() or "\ufffd" in stop:
        return
    kw["stop"] = [stop]
    kw["include_stop_str_in_output"] = rng.random() < 0.3
    req.params = kw
    req.expect = {"stop": stop, "include": kw["include_stop_str_in_output"], "text": text,
                  "ids": ids}


def _config(rng: random.Random, processes: bool, device: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "scheduler": rng.choice(["sarathi", "sarathi", "vllm"]),
        "chunk_size": rng.choice([8, 8, 16, 33, 64, 512, rng.randint(8, 100)]),
        "max_num_seqs": rng.choice([1, 2, 3, 5, 8, 256]),
        "enable_prefix_caching": rng.random() < 0.75,
        "seed": rng.randrange(100),
    }
    vm = "cuda" if device == "cuda" else "cpu"  # vAttention's backend on this device
    cache = rng.choice([f"{vm}-mega", f"{vm}-mega", f"{vm}-per_layer", "dense-mega",
                        "dense-per_layer", "paged", "paged"])
    if cache == "paged":
        cfg["attention_backend"] = "paged"
        cfg["block_tokens"] = rng.choice([4, 8, 16, 16, 32])
    else:
        cfg["kv_cache_backend"], cfg["kv_layout"] = cache.split("-")
        if rng.random() < 0.3:
            cfg["page_bytes"] = rng.choice(
                [2**21, 2**22] if device == "cuda" else [4096, 8192, 16384])
    if device == "cuda" and rng.random() < 0.3:
        cfg["enforce_eager"] = True
    if rng.random() < 0.3:
        cfg["overlap_scheduling"] = True
    if rng.random() < 0.45:  # blocks over the fewest the longest request needs
        cfg["spare_blocks"] = rng.choice([0, 1, 2, 4, 8])
        cfg["expected_request_tokens"] = rng.choice([8, 16, 32, 64])
    r = rng.random()
    if processes and r < 0.04:
        cfg["tensor_parallel_size"] = 2
    elif processes and r < 0.07:
        cfg["executor"] = "mp"
    return cfg


def _schedule(rng: random.Random, count: int, shared: list[int]) -> Schedule:
    order = list(range(count))
    mode = rng.choice(["together", "shuffled", "staggered", "phases", "phases"])
    if mode != "together":
        rng.shuffle(order)
    if mode in ("together", "shuffled"):
        phases = [[(0, i) for i in order]]
    elif mode == "staggered":
        phases = [[(rng.choice([0, 0, rng.randint(0, 30)]), i) for i in order]]
    else:
        cuts = sorted(rng.sample(range(1, count), min(rng.randint(1, 2), count - 1)))
        bounds = [0, *cuts, count]
        phases = [[(rng.choice([0, 0, rng.randint(0, 10)]), i) for i in order[a:b]]
                  for a, b in zip(bounds, bounds[1:]) if b > a]
    aborts: list[tuple[int, int, int]] = []
    if rng.random() < 0.5:
        pool = shared if shared and rng.random() < 0.7 else list(range(count))
        for i in rng.sample(pool, min(len(pool), rng.randint(1, 3))):
            phase = next(p for p, ph in enumerate(phases) if any(j == i for _, j in ph))
            aborts.append((rng.choice([0, 1, rng.randint(0, 25)]), phase, i))
    readd = {i for _, _, i in aborts if rng.random() < 0.3}
    resets = ({rng.randint(0, 30) for _ in range(rng.randint(1, 3))}
              if rng.random() < 0.2 else set())
    return Schedule(mode, phases, aborts, readd, resets)


# -- running -----------------------------------------------------------------------------------
def make_llm(model: FuzzModel, cfg: dict[str, Any], max_model_len: int | None,
             need_tokens: int, device: str = "cpu") -> LLM:
    """The engine for ``cfg`` on ``device``; with ``spare_blocks``, a KV budget of that many
    blocks over the fewest that hold ``need_tokens`` (so sequences preempt one another)."""
    kw = {**model.engine, **{k: v for k, v in cfg.items() if k != "spare_blocks"}}
    kw["dtype"] = "float32"
    kw["device"] = device
    if device == "cuda":  # a small model's cache, not most of the card's memory
        kw.setdefault("kv_cache_memory", 2**30)
    if max_model_len:
        kw["max_model_len"] = max_model_len
    if "spare_blocks" in cfg:
        probe = LLM(model.path,
                    **{k: v for k, v in kw.items() if k != "expected_request_tokens"})
        cap = probe.engine.executor.capacity()
        block_bytes = probe.engine.cache_plan.budget // cap.num_blocks
        blocks = -(-need_tokens // cap.tokens_per_block) + 1 + cfg["spare_blocks"]
        if probe.engine.cache_plan.backend == "dense":  # it allocates whole slots up front
            blocks = max(blocks, -(-probe.engine.max_seq_len // cap.tokens_per_block))
        probe.engine.shutdown()
        kw["kv_cache_memory"] = blocks * block_bytes
    else:
        kw.pop("expected_request_tokens", None)
    return LLM(model.path, **kw)


def _result(out: RequestOutput) -> Result:
    samples = []
    for c in sorted(out.outputs, key=lambda c: c.index):
        lp = None
        if c.logprobs is not None:
            lp = [{int(t): float(v.logprob) for t, v in d.items()} for d in c.logprobs]
        samples.append({"ids": list(c.token_ids), "text": c.text, "finish": c.finish_reason,
                        "stop_reason": c.stop_reason, "lp": lp, "cum": c.cumulative_logprob})
    plp = None
    if out.prompt_logprobs is not None:
        plp = [None if d is None else {int(t): float(v.logprob) for t, v in d.items()}
               for d in out.prompt_logprobs]
    return Result(out.error, samples, plp)


class _Streams:
    """What a reader of snapshot and delta outputs has put together, per request: a delta
    request's outputs (the finished one a delta too) added up as the server adds them."""

    def __init__(self) -> None:
        self.seen: dict[int, dict[int, dict[str, Any]]] = {}
        self.added: dict[int, DeltaAccumulator] = {}

    def forget(self, i: int) -> None:
        self.seen.pop(i, None)
        self.added.pop(i, None)

    def read(self, i: int, mode: str, out: RequestOutput, problems: list[str]) -> RequestOutput:
        """The request's whole output so far (a snapshot's own, or the deltas added up)."""
        whole = out
        if mode == "delta":
            for c in out.outputs:
                if c.text != c.text_delta or len(c.token_ids) != c.num_new_tokens:
                    problems.append(f"r{i}: a delta output that is not one")
            added = self.added.setdefault(i, DeltaAccumulator())
            added.add(out)
            whole = added.output()
        for c, part in zip(whole.outputs, out.outputs, strict=True):
            got = self.seen.setdefault(i, {}).setdefault(c.index, {"ids": [], "text": ""})
            got["text"] += part.text_delta
            if c.token_ids[:len(got["ids"])] != got["ids"]:
                problems.append(f"r{i}: streamed tokens {got['ids']} are not a prefix of "
                                f"{c.token_ids}")
            if c.finished() and got["text"] != c.text:
                problems.append(f"r{i}: text deltas {got['text']!r} != final {c.text!r}")
            got["ids"] = list(c.token_ids)
        return whole


def drive(engine: LLMEngine, reqs: list[Request], schedule: Schedule,
          at_rest: dict[str, Any], max_steps: int = 20_000) -> Run:
    """Run ``reqs`` through the step API as ``schedule`` says; each phase starts once the
    previous one is done. ``at_rest``: the engine's cache statistics before any request."""
    run = Run()
    streams = _Streams()

    # Under --set scheduling_policy=priority, priorities from the request's index (no draw
    # of the case's generator, so every case draws what it draws without them).
    by_priority = engine.config.scheduler.scheduling_policy == "priority"

    def add(i: int) -> None:
        r = reqs[i]
        engine.add_request(r.prompt, r.sampling(), request_id=f"r{i}",
                           final_only=r.stream == "final", cache_salt=r.salt,
                           delta=r.stream == "delta",
                           priority=(7 * i) % 5 - 2 if by_priority else 0)

    for p, phase in enumerate(schedule.phases):
        pending = sorted(phase)
        aborts = sorted((s, i) for s, q, i in schedule.aborts if q == p)
        added: set[int] = set()
        step = 0
        while pending or aborts or engine.has_unfinished_requests():
            while pending and pending[0][0] <= step:
                i = pending.pop(0)[1]
                add(i)
                added.add(i)
            while aborts and aborts[0][0] <= step:
                i = aborts.pop(0)[1]
                if i in added and i not in run.results:
                    engine.abort_request(f"r{i}")
                    engine.abort_request(f"r{i}")  # twice: a no-op
                    if i in schedule.readd:  # the id again, as a new request
                        streams.forget(i)
                        add(i)
                    else:
                        run.aborted.add(i)
            if step in schedule.resets:
                engine.reset_prefix_cache()
            step += 1
            if step > max_steps:
                run.problems.append(f"not finished after {max_steps} steps")
                return run
            if not engine.has_unfinished_requests():
                continue
            for out in engine.step():
                i = int(out.request_id[1:])
                if i in run.aborted:
                    run.problems.append(f"r{i}: an output after its abort")
                    continue
                if reqs[i].stream != "final":
                    out = streams.read(i, reqs[i].stream, out, run.problems)
                elif not out.finished:
                    run.problems.append(f"r{i}: a final-only request gave an unfinished output")
                if out.finished:
                    if i in run.results:
                        run.problems.append(f"r{i} finished twice")
                    run.results[i] = _result(out)
    run.problems += idle_problems(engine, at_rest)
    return run


def idle_problems(engine: LLMEngine, at_rest: dict[str, Any]) -> list[str]:
    """What an engine with no requests left should not hold, beyond what it held before any
    request (``at_rest``: its cache statistics then)."""
    problems = []
    snap = engine.snapshot()
    if engine.has_unfinished_requests() or engine.requests:
        problems.append("requests left after the run")
    if snap.num_running or snap.num_waiting:
        problems.append(f"{snap.num_running} running and {snap.num_waiting} waiting after "
                        "the run")
    slots, rest_slots = snap.cache.get("slots_used", 0), at_rest.get("slots_used", 0)
    if slots != rest_slots:
        problems.append(f"{slots} slots used, {rest_slots} before any request")
    num_blocks = engine.executor.capacity().num_blocks
    if engine.scheduler.free_blocks != num_blocks:
        problems.append(f"{engine.scheduler.free_blocks} of {num_blocks} blocks free")
    if snap.prefix_cached_blocks != snap.prefix_evictable_blocks:
        problems.append(f"{snap.prefix_cached_blocks} cached blocks, only "
                        f"{snap.prefix_evictable_blocks} evictable")
    pc = engine.prefix_cache
    if pc is not None and pc.num_sequences:
        problems.append(f"the prefix cache still tracks {pc.num_sequences} sequences")
    blocks_used = snap.cache.get("blocks_used", 0) - at_rest.get("blocks_used", 0)
    if blocks_used != snap.prefix_cached_blocks:
        problems.append(f"{blocks_used} more blocks used than before any request, "
                        f"{snap.prefix_cached_blocks} cached")
    return problems


# -- comparing ---------------------------------------------------------------------------------
def _close_logprobs(a: dict[int, float], b: dict[int, float], tol: float) -> bool:
    """The same top logprobs, to ``tol``. A token one side lists and the other does not must
    tie (within ``tol``) with one the other lists: which of equal logprobs make the top k is
    the sort's choice, and so whether the sampled token needs an entry of its own."""
    if abs(len(a) - len(b)) > 1 or any(
            not math.isclose(a[t], b[t], abs_tol=tol) for t in a.keys() & b.keys()):
        return False
    return all(any(math.isclose(x[t], v, abs_tol=tol) for v in y.values())
               for x, y in ((a, b), (b, a)) for t in x.keys() - y.keys())


def compare(ref: Result, got: Result, tol: float = 1e-4, tie: float = 0.0) -> str | None:
    """How ``got`` differs from ``ref`` (None: it does not). ``tie``: tokens may part where
    the reference's logprobs put the two within ``tie`` (the rest is not compared)."""
    if ref.error or got.error:
        return None if bool(ref.error) == bool(got.error) else (
            f"error: reference {ref.error!r}, got {got.error!r}")
    if len(ref.samples) != len(got.samples):
        return f"{len(got.samples)} samples, reference {len(ref.samples)}"
    for n, (a, b) in enumerate(zip(ref.samples, got.samples)):
        if a["ids"] != b["ids"]:
            at = next((k for k, (x, y) in enumerate(zip(a["ids"], b["ids"])) if x != y),
                      min(len(a["ids"]), len(b["ids"])))
            if tie and _near_tie(a, b, at, tie):
                continue
            return (f"sample {n}: tokens differ at {at}: reference {a['ids']}, got {b['ids']} "
                    f"(finish {a['finish']} / {b['finish']})")
        for key in ("finish", "stop_reason", "text"):
            if a[key] != b[key]:
                return f"sample {n}: {key} {b[key]!r}, reference {a[key]!r}"
        if (a["lp"] is None) != (b["lp"] is None) or (
            a["lp"] is not None and (
                len(a["lp"]) != len(b["lp"])
                or not all(_close_logprobs(x, y, tol) for x, y in zip(a["lp"], b["lp"])))):
            return f"sample {n}: logprobs {b['lp']}, reference {a['lp']}"
        # A sum of per-token logprobs, each allowed ``tol``: its error grows with the length
        # (on the GPU ~2e-5 nats a token, past 1e-3 by 50 tokens).
        if a["cum"] is not None and b["cum"] is not None and not math.isclose(
                a["cum"], b["cum"], abs_tol=tol * max(1, len(a["ids"]))):
            return f"sample {n}: cumulative logprob {b['cum']}, reference {a['cum']}"
    pa, pb = ref.prompt_logprobs, got.prompt_logprobs
    if (pa is None) != (pb is None) or (pa is not None and (
            len(pa) != len(pb) or any((x is None) != (y is None) or (
                x is not None and not _close_logprobs(x, y, tol)) for x, y in zip(pa, pb)))):
        return "prompt logprobs differ"
    return None


def _near_tie(a: dict[str, Any], b: dict[str, Any], at: int, tie: float) -> bool:
    """Whether the two samples part at ``at`` between tokens the reference's logprobs there
    put within ``tie`` of each other."""
    if a["lp"] is None or at >= min(len(a["ids"]), len(b["ids"])) or at >= len(a["lp"]):
        return False
    lp = a["lp"][at]
    x, y = a["ids"][at], b["ids"][at]
    return x in lp and y in lp and abs(lp[x] - lp[y]) < tie


def check_reference(reqs: list[Request], ref: dict[int, Result], max_seq_len: int
                    ) -> list[tuple[str, str]]:
    """The reference's outputs against the rules they must follow: (kind, detail) pairs."""
    out = []
    for i, req in enumerate(reqs):
        kw, res = req.params, ref.get(i)
        if res is None:
            out.append(("missing", f"r{i} never finished"))
            continue
        if res.error:
            # allowed_token_ids, bad words and min_tokens may leave the grammar no token: such
            # a request ends with an error (docs/structured-outputs.md, "A limit").
            dead_end = kw.get("structured_outputs") is not None and (
                kw.get("allowed_token_ids") or kw.get("bad_words") or kw.get("min_tokens"))
            if not (dead_end and "output constraint failed" in res.error):
                out.append(("reference-error", f"r{i}: {res.error}"))
            continue
        cap = min(kw["max_tokens"] or CONTEXT, max_seq_len - len(req.prompt))
        for s in res.samples:
            ids, finish = s["ids"], s["finish"]
            if finish == "length" and len(ids) != cap:
                out.append(("max_tokens", f"r{i}: finished by length after {len(ids)} != {cap}"))
            if len(ids) > cap:
                out.append(("max_tokens", f"r{i}: {len(ids)} tokens > {cap}"))
            if finish == "stop" and len(ids) < kw.get("min_tokens", 0):
                out.append(("min_tokens", f"r{i}: stopped after {len(ids)}"))
            if kw["ignore_eos"] and finish == "stop" and not (kw.get("stop") or
                                                              kw.get("stop_token_ids")):
                out.append(("ignore_eos", f"r{i}: stopped despite ignore_eos: {ids}"))
            if not kw["ignore_eos"] and EOS in ids[kw.get("min_tokens", 0):-1]:
                out.append(("eos", f"r{i}: EOS inside the output {ids}"))
            for j, d in enumerate(s["lp"] or []):
                if ids[j] not in d or not kw["logprobs"] <= len(d) <= kw["logprobs"] + 1:
                    out.append(("logprobs", f"r{i}: {len(d)} entries at {j} for "
                                f"logprobs={kw['logprobs']}, sampled {ids[j]}: {d}"))
                elif kw["temperature"] == 0 and not req.shaped and d[ids[j]] < max(
                        d.values()) - 1e-6:
                    out.append(("logprobs", f"r{i}: the greedy token is not the top at {j}"))
        constraint = kw.get("structured_outputs")
        for s in res.samples:
            if constraint is not None and s["finish"] == "stop" and not (
                    kw.get("stop") or kw.get("stop_token_ids")):
                problem = _violates(constraint, s["text"])
                if problem:
                    out.append(("structured", f"r{i}: {problem}"))
        if req.kind == "greedy" and any(s["ids"] != res.samples[0]["ids"] for s in res.samples):
            out.append(("greedy-n", f"r{i}: greedy samples differ"))
        if req.expect is not None:
            out += [(k, f"r{i}: {d}") for k, d in _stop_problems(req.expect, res.samples[0])]
    return out


def _violates(constraint: StructuredOutputsParams, text: str) -> str | None:
    """How a finished constrained output breaks its constraint (None: it does not)."""
    import re

    if constraint.regex is not None:
        return None if re.fullmatch(constraint.regex, text) else f"{text!r} is not the regex"
    if constraint.choice is not None:
        return None if text in constraint.choice else f"{text!r} is not a choice"
    try:
        value = json.loads(text)
    except ValueError:
        return f"{text!r} is not JSON"
    ok = (isinstance(value, dict) and set(value) <= {"a", "b"} and "a" in value
          and isinstance(value["a"], int) and not isinstance(value["a"], bool)
          and (("b" not in value) or (isinstance(value["b"], str) and len(value["b"]) <= 5)))
    return None if ok else f"{text!r} breaks the schema"


def _stop_problems(e: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    ids, full = s["ids"], e["ids"]
    if "stop_token" in e:
        token, first, least = e["stop_token"], e["first"], e["min_tokens"]
        if least <= first:  # the first occurrence ends it
            want = full[:first + 1]
            if ids != want or s["finish"] != "stop" or s["stop_reason"] != token:
                return [("stop_token", f"stop {token}, min_tokens {least}: got {ids} "
                         f"({s['finish']}, {s['stop_reason']}), want {want}")]
        elif ids[:first] != full[:first] or token in ids[:least] or (
                s["finish"] == "stop" and (ids[-1] != token or len(ids) < least)):
            # banned until min_tokens (as vLLM): the output may go elsewhere after `first`
            return [("stop_token", f"stop {token}, min_tokens {least}: got {ids}, unstopped "
                     f"{full}")]
        return []
    stop, include, text = e["stop"], e["include"], e["text"]
    cut = text.find(stop)
    want = text[:cut + (len(stop) if include else 0)]
    if s["text"] != want or s["finish"] != "stop" or s["stop_reason"] != stop:
        return [("stop_str", f"stop {stop!r} (include {include}): got {s['text']!r} "
                 f"({s['finish']}), want {want!r}")]
    if ids != full[:len(ids)]:
        return [("stop_str", "the tokens are not a prefix of the unstopped output")]
    return []


# -- one case ----------------------------------------------------------------------------------
def run_case(case: int, models: dict[str, FuzzModel], configs: int = 6, processes: bool = True,
             log: Callable[[str], None] = lambda _: None, tally: Counter | None = None,
             device: str = "cpu", overrides: dict[str, Any] | None = None) -> list[Finding]:
    """Case ``case`` (its seed) with ``configs`` configurations; what went wrong, if anything.
    ``processes``: the configurations may use TP=2 or the mp executor (seconds each).
    ``overrides``: engine arguments set in every drawn configuration."""
    gpu = device == "cuda"
    tol, tie = (GPU_LOGPROB_TOL, GPU_TIE) if gpu else (1e-4, 1e-5)
    tally = tally if tally is not None else Counter()
    rng = random.Random(case)
    arch = rng.choice(MODELS)
    model = models[arch]
    max_model_len = rng.choice([None, None, None, 160, 256, 96])
    limit = (max_model_len or CONTEXT) - 5
    reqs = []
    for prompt, origin in _prompts(rng, rng.randint(2, 14)):
        kw, kind = _params(rng)
        if max_model_len == 96 and kind != "noise" and rng.random() < 0.3:
            kw["max_tokens"] = None  # up to the context
            kw.pop("min_tokens", None)
        reqs.append(Request(prompt[:limit], kw, kind, origin,
                            rng.choice([None, None, None, "a", "b"]),
                            rng.choice(["final", "final", "snapshot", "delta"])))
    # Rounding moves with the batch's shape, so two tokens within ~1e-6 may swap (two 5e-7
    # apart were seen on tiny Llama); on a GPU by far more, and a patch's new rows start as
    # near-copies of one another (a 1e-6 tie at the top-k cut was seen). Greedy requests
    # therefore show their runner-up, for the comparison's near-tie rule. Where near ties are
    # common, those whose logits are processed (the raw top two need not name a processed
    # tie) only have to finish, and seeded ones draw from the whole vocabulary (patch) or
    # only have to finish (GPU).
    common_ties = gpu or bool(model.engine)
    for r in reqs:
        if r.kind == "greedy":
            if r.shaped and common_ties:
                r.kind = "noise"
            else:
                r.params["logprobs"] = max(r.params.get("logprobs") or 0, 2)
        elif r.kind == "seeded" and gpu:
            r.kind = "noise"
        elif r.kind == "seeded" and model.engine:
            r.params.update(top_k=-1, top_p=1.0, min_p=0.0)
    findings: list[Finding] = []

    def found(kind: str, detail: str, cfg: dict[str, Any] | None = None, **extra: Any) -> None:
        findings.append(Finding(case, kind, detail, cfg, {"arch": arch, **extra}))
        log(json.dumps(dataclasses.asdict(findings[-1]), default=str))

    together = Schedule("together", [[(0, i) for i in range(len(reqs))]], [], set(), set())
    ref_llm = make_llm(model, REFERENCE, max_model_len, 0, device)
    engine = ref_llm.engine
    rest = engine.cache_stats()
    # Unstopped greedy outputs first, to give some requests stops taken from them.
    plain = [dataclasses.replace(r, stream="final") for r in reqs]
    base = drive(engine, plain, together, rest)
    for i, r in enumerate(reqs):
        # Not on a GPU: there the other requests' stops change the batches before this one's,
        # and rounding may move its tokens (stops are host logic, checked on the CPU).
        if (r.kind == "greedy" and not r.shaped and rng.random() < 0.3
                and not base.results[i].error and not gpu):
            _with_stop(rng, r, base.results[i].samples[0])
    reference = drive(engine, reqs, together, rest)
    for p in base.problems + reference.problems:
        found("idle", p, REFERENCE)
    ref = reference.results
    for kind, detail in check_reference(reqs, ref, engine.max_seq_len):
        found(kind, detail, REFERENCE)
    tally["cases"] += 1
    tally["stop checks"] += sum(r.expect is not None for r in reqs)
    tally["constrained outputs checked"] += sum(
        s["finish"] == "stop" for i, r in enumerate(reqs) if r.params.get("structured_outputs")
        and not ref[i].error for s in ref[i].samples)

    # Greedy tokens against transformers (whose model has no patched rows).
    if rng.random() < 0.35 and not gpu and not model.engine:
        hf = hf_model(model.path)
        for i in [i for i, r in enumerate(reqs) if r.kind == "greedy" and not r.shaped
                  and r.params["ignore_eos"] and not ref[i].error
                  and ref[i].samples[0]["finish"] == "length"][:2]:
            got = ref[i].samples[0]["ids"]
            want = hf_greedy(hf, reqs[i].prompt, len(got))
            tally["transformers checks"] += 1
            if want != got:
                found("transformers", f"r{i}: transformers {want}, engine {got}",
                      prompt=reqs[i].prompt)

    if rng.random() < 0.4:  # a request alone gives what it gave in the batch
        for i in rng.sample([i for i, r in enumerate(reqs) if r.kind != "noise"],
                            min(2, sum(r.kind != "noise" for r in reqs))):
            alone = drive(engine, [reqs[i]], Schedule("alone", [[(0, 0)]], [], set(), set()),
                          rest)
            tally["alone checks"] += 1
            for p in alone.problems:
                found("idle", p, REFERENCE)
            diff = compare(ref[i], alone.results[0], tol, tie)
            if diff:
                found("alone", f"r{i}: {diff}", REFERENCE, params=reqs[i].params)

    # Follow-ups: a prompt, its greedy output and more (prefix hits on generated tokens).
    follow = []
    for i, r in enumerate(reqs):
        if r.kind == "greedy" and not ref[i].error and rng.random() < 0.5:
            prompt = r.prompt + ref[i].samples[0]["ids"] + _tokens(
                rng, rng.choice([0, 1, rng.randint(2, 20)]))
            follow.append(Request(
                prompt[:limit - 5], {"temperature": 0.0, "max_tokens": rng.randint(1, 20),
                                     "ignore_eos": True, "logprobs": 2},
                "greedy", "follow-up", r.salt, "final"))
    follow_all = Schedule("together", [[(0, j) for j in range(len(follow))]], [], set(), set())
    follow_ref = drive(engine, follow, follow_all, rest) if follow else Run()
    for p in follow_ref.problems:
        found("idle", p, REFERENCE)
    engine.shutdown()

    need = max(len(r.prompt) + (r.params["max_tokens"] or 96) + 1 for r in reqs + follow)
    need = min(need, max_model_len or need)
    shared = [i for i, r in enumerate(reqs) if r.origin != "random"]
    for c in range(configs):
        crng = random.Random(case * 1000 + c)
        cfg = {**_config(crng, processes and not gpu, device), **(overrides or {})}
        schedule = _schedule(crng, len(reqs), shared)
        t0 = time.perf_counter()
        try:
            llm = make_llm(model, cfg, max_model_len, need, device)
        except ValueError as e:  # a combination the engine refuses up front
            tally["configs refused"] += 1
            log(f"  configuration refused: {cfg}: {e}")
            continue
        engine = llm.engine
        rest = engine.cache_stats()
        try:
            run = drive(engine, reqs, schedule, rest)
            follow_run = None
            if follow and crng.random() < 0.6:
                follow_run = drive(engine, follow, follow_all, rest)
        except Exception as e:  # noqa: BLE001 - a crash is what the fuzzer looks for
            found("crash", f"{type(e).__name__}: {e}", cfg, mode=schedule.mode,
                  aborts=schedule.aborts, traceback=traceback.format_exc()[-3000:])
            engine.shutdown()
            continue
        tally["configs"] += 1
        tally["aborted requests"] += len(run.aborted)
        tally["preempting configs"] += bool(engine.stats.preemptions)
        tally["configs with prefix hits"] += bool(engine.snapshot().stats.prefix_cache_hits)
        for p in run.problems + (follow_run.problems if follow_run else []):
            found("idle", p, cfg, mode=schedule.mode, aborts=schedule.aborts)
        for i, r in enumerate(reqs):
            if i in run.aborted:
                continue
            if i not in run.results:
                found("missing", f"r{i} never finished", cfg, mode=schedule.mode)
                continue
            if r.kind == "noise":
                continue
            tally[f"compared {r.kind}"] += 1
            tally["compared constrained"] += bool(r.params.get("structured_outputs"))
            diff = compare(ref[i], run.results[i], tol, tie)
            if diff:
                found("differs", f"r{i} ({r.kind}, {r.origin}): {diff}", cfg,
                      mode=schedule.mode, aborts=schedule.aborts, params=r.params,
                      salt=r.salt, stream=r.stream)
        if follow_run is not None:
            for j in range(len(follow)):
                tally["compared follow-ups"] += 1
                diff = (compare(follow_ref.results[j], follow_run.results[j], tol, tie)
                        if j in follow_run.results else "never finished")
                if diff:
                    found("differs", f"follow-up {j}: {diff}", cfg, params=follow[j].params)
        log(f"  config {c}: {schedule.mode}, {len(run.aborted)} aborted, "
            f"{engine.stats.preemptions} preemptions, {time.perf_counter() - t0:.2f} s: {cfg}")
        engine.shutdown()
    return findings


def build_models(root: str) -> dict[str, FuzzModel]:
    """One tiny random-weight model per architecture, under ``root``, and the patch."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    return fuzz_models({a: save_tiny_model(a, os.path.join(root, a)) for a in ARCHS}, root)


def fuzz_models(tiny: dict[str, str], root: str) -> dict[str, FuzzModel]:
    """``MODELS`` from tests/models.py's tiny models (architecture -> folder): an AdaptiVocab
    patch of 40 n-grams of the demo corpus is built for tiny Llama's tokenizer under ``root``."""
    from importlib import resources

    from adaptivocab import BuildConfig, PatchTokenizer, build_patch, measure_reduction
    from adaptivocab.base import load_base_tokenizer

    corpus = resources.files("sarathi.transformers_utils").joinpath("demo_corpus.txt")
    docs = [p for p in corpus.read_text().split("\n\n") if p.strip()]
    base = load_base_tokenizer(tiny["llama"])
    patch, _ = build_patch(base, docs, BuildConfig(num_tokens=40, max_ngram=3, progress=False))
    stats = measure_reduction(PatchTokenizer(base, patch), docs[:8], progress=False)
    out = os.path.join(root, "llama-adaptivocab-patch")
    PatchTokenizer(base, patch, reduction_stats=stats).save_pretrained(out)
    return {**{a: FuzzModel(p) for a, p in tiny.items()},
            "llama+adaptivocab": FuzzModel(tiny["llama"], {"patch_tokenizer": out})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", type=int, help="run this case only")
    ap.add_argument("--start", type=int, default=0, help="first case (0)")
    ap.add_argument("--minutes", type=float, default=10.0,
                    help="run cases from --start until this much time has passed (10)")
    ap.add_argument("--configs", type=int, default=6, help="configurations per case (6)")
    ap.add_argument("--no-processes", action="store_true",
                    help="no TP=2 or mp-executor configurations (they take seconds each)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                    help="where the engines run (cpu)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="an engine argument for every configuration (repeatable; the value "
                         "is read as JSON where it parses, else as a string)")
    ap.add_argument("--findings", help="also append each finding to this JSON-lines file")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every configuration")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or not key:
            ap.error(f"--set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value

    import logging

    import torch

    # One thread, as the reference runs; the mp executor's ranks take the same (a rank with
    # two moved logprobs by up to 2.4e-4 between runs of identical steps: docs/parallel.md).
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    sink = open(args.findings, "a") if args.findings else None  # noqa: SIM115

    def log(line: str) -> None:
        if line.startswith("{"):
            print(line, flush=True)
            if sink:
                sink.write(line + "\n")
                sink.flush()
        elif args.verbose:
            print(line, flush=True)

    tally: Counter = Counter()
    total = 0
    with tempfile.TemporaryDirectory(prefix="engine-fuzz-") as root:
        models = build_models(root)
        end = time.monotonic() + args.minutes * 60
        case = args.case if args.case is not None else args.start
        while True:
            try:
                total += len(run_case(case, models, args.configs, not args.no_processes, log,
                                      tally, args.device, overrides))
            except Exception:  # noqa: BLE001 - the harness's own failure, reported as one
                total += 1
                log(json.dumps({"case": case, "kind": "harness",
                                "detail": traceback.format_exc()}))
            if args.case is not None or time.monotonic() > end:
                break
            case += 1
    print(f"cases {args.case if args.case is not None else args.start}-{case}: "
          f"{total} findings; " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
