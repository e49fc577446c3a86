"""What structured outputs cost: the host's mask work per step, and the step time it adds.

Two measures at batch ``--batch`` (default 64):

* masks: ``--batch`` JSON-schema matchers over the model's vocabulary (or ``--tokenizer``'s)
  walk random valid outputs; the table gives the host time to compute one step's masks
  (all rows, llguidance's threads) and per row.
* engine: ``--batch`` requests decode ``--max-tokens`` tokens each, unconstrained and under
  the same JSON schema (a long free string, the costliest mask: nearly every token is
  allowed and each must be checked), with overlapped scheduling on and off. With overlap,
  step N+1's masks are computed while its forward runs on the GPU, so the constrained step
  time should stay that of the unconstrained one as long as the masks take less than a
  forward. On a CPU the forward runs on the host too, so nothing can hide there.

    python benchmarks/structured_outputs.py                                  # demo, CPU
    python benchmarks/structured_outputs.py --preset llama3-8b \
        --tokenizer ASSETS/tokenizers/mistral-7b --json out.json               # GPU
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from typing import Any

from common import print_table, run_info, write_json

from sarathi import LLM, SamplingParams
from sarathi.model_executor.presets import PRESETS, write_preset
from sarathi.sampling_params import StructuredOutputsParams
from sarathi.sequence import Sequence
from sarathi.structured_output import StructuredOutputManager

# A typical extraction schema (for the mask walk).
RECORD = {
    "type": "object",
    "properties": {
        "patient": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "code": {"type": "string", "pattern": "^[A-Z][0-9]{2}(\\.[0-9])?$"},
                    "severity": {"enum": ["mild", "moderate", "severe"]},
                    "note": {"type": "string"},
                },
                "required": ["code", "severity"],
            },
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["patient", "age", "findings", "urgent"],
}
# A free string that never ends within the token budget (for the engine runs).
LONG_TEXT = {
    "type": "object",
    "properties": {"text": {"type": "string", "minLength": 100_000}},
    "required": ["text"],
}


class _Seq:
    """What ``StructuredOutputManager.masks`` and ``accept`` read of a sequence (a prompt
    of no tokens, sampling with the defaults)."""

    def __init__(self, seq_id: int) -> None:
        self.seq_id = seq_id
        self.finished = False
        self.params = SamplingParams()
        self.prompt_len = 0
        self.num_output = 0


def mask_walk(tokenizer: Any, eos: set[int], batch: int, steps: int, seed: int) -> dict[str, Any]:
    manager = StructuredOutputManager(tokenizer, eos)
    t0 = time.perf_counter()
    _ = manager.vocabulary
    vocab_s = time.perf_counter() - t0
    spec = StructuredOutputsParams(json=RECORD)
    t0 = time.perf_counter()
    manager.compile(spec)
    compile_s = time.perf_counter() - t0
    seqs: list[Any] = [_Seq(i) for i in range(batch)]
    manager.add([s.seq_id for s in seqs], spec)
    rng = random.Random(seed)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        masks = manager.masks(seqs)
        times.append(time.perf_counter() - t0)
        if masks is None:
            break
        tokens = []
        for row in range(len(masks.rows)):
            bits = masks.bits[row].view("uint32")
            allowed = [
                w * 32 + b
                for w, word in enumerate(bits.tolist())
                if word
                for b in range(32)
                if word >> b & 1
            ]
            tokens.append(rng.choice(allowed))
        # accept reads each token's position (index - prompt_len: the output tokens before it).
        failed = manager.accept(seqs, tokens, [s.num_output for s in seqs])
        if failed:
            raise RuntimeError(f"a constraint failed in the mask walk: {failed}")
        for s, t in zip(seqs, tokens, strict=True):
            s.num_output += 1
            if t in eos:  # a finished record starts over, so every row keeps working
                manager.remove(s.seq_id)
                manager.add([s.seq_id], spec)
                s.num_output = 0
    ms = sorted(t * 1e3 for t in times)
    return {
        "vocab_size": manager.vocabulary.vocab_size,
        "vocabulary_s": vocab_s,
        "compile_ms": compile_s * 1e3,
        "mask_ms_p50": statistics.median(ms),
        "mask_ms_p90": ms[int(0.9 * (len(ms) - 1))],
        "mask_us_per_row": statistics.median(ms) * 1e3 / batch,
    }


def engine_run(args: argparse.Namespace, overlap: bool, constrained: bool) -> dict[str, Any]:
    llm = LLM(
        model=args.model,
        load_format=args.load_format,
        overlap_scheduling=overlap,
        max_num_seqs=args.batch,
    )
    spec = StructuredOutputsParams(json=LONG_TEXT) if constrained else None
    params = SamplingParams(
        temperature=1.0, max_tokens=args.max_tokens, ignore_eos=True, structured_outputs=spec
    )
    prompts = [[7 + i % 50] * 8 for i in range(args.batch)]
    llm.generate(prompts[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm up
    mask_s = 0.0
    manager = llm.engine.structured
    masks = manager.masks

    def timed(seqs: list[Sequence]) -> Any:
        nonlocal mask_s
        t0 = time.perf_counter()
        out = masks(seqs)
        mask_s += time.perf_counter() - t0
        return out

    manager.masks = timed  # type: ignore[method-assign]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    steps = max(len(o.outputs[0].token_ids) for o in outs)
    llm.engine.shutdown()
    return {
        "overlap": overlap,
        "constrained": constrained,
        "tokens": tokens,
        "seconds": seconds,
        "ms_per_step": seconds * 1e3 / steps,
        "mask_ms_per_step": mask_s * 1e3 / steps,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="demo")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a model shape with random weights and the demo tokenizer (instead of --model)",
    )
    p.add_argument("--load-format", default="auto", help="'dummy' for random weights")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer of the mask walk (default: the model's)"
    )
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--walk-steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args()
    if args.preset:
        args.model = write_preset(args.preset, tempfile.mkdtemp(prefix="structured-"))
        args.load_format = "dummy"

    runs = [engine_run(args, overlap, c) for overlap in (True, False) for c in (False, True)]
    base = {r["overlap"]: r["ms_per_step"] for r in runs if not r["constrained"]}
    for r in runs:
        r["step_ratio"] = r["ms_per_step"] / base[r["overlap"]]
    print_table(
        runs, ["overlap", "constrained", "tokens", "ms_per_step", "mask_ms_per_step", "step_ratio"]
    )

    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        eos = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    else:
        llm = LLM(model=args.model, load_format=args.load_format)
        tok, eos = llm.get_tokenizer(), set(llm.engine.setup.eos_ids)
        llm.engine.shutdown()
    walk = mask_walk(tok, eos, args.batch, args.walk_steps, args.seed)
    print()
    print_table([walk], list(walk))
    write_json(args.json, {**run_info(), "batch": args.batch, "engine": runs, "masks": walk})


if __name__ == "__main__":
    main()
