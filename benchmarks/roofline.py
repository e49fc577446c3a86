"""How close decode and prefill get to the GPU's own limits (random weights, real shapes).

First the two ceilings, measured on this card: device-to-device copy bandwidth (bytes read
plus written) and the bf16 matmul rate (8192^3). Then:

- decode steps (one token per sequence, model forward + LM head) for Llama-2-7B at batch 1
  (contexts 512, 4096) and Llama-3-8B at batch 1/16/64/128 (context 2048), eager and as a
  replayed CUDA graph: achieved fraction of the bandwidth floor =
  (weight bytes + KV bytes read) / step time / copy bandwidth;
- a 2,048-token prefill chunk of Llama-3-8B: achieved FLOP/s over the matmul rate.

The KV cache is a vattention cache (cuda backend) filled with random values.

    python benchmarks/roofline.py --json benchmarks/results/roofline_h100.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace

import torch
from common import (
    bench_ms,
    copy_bandwidth,
    gpu_timeline,
    matmul_rate,
    print_table,
    require_cuda,
    run_info,
    write_json,
)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import vattention
from sarathi.model_executor.attention import AttentionMetadata, get_attention_backend
from sarathi.model_executor.attention.launch import decode_launch, decode_splits
from sarathi.model_executor.attention.metadata import FixedLaunch, PrefillChunk, chunk_table
from sarathi.model_executor.dummy_weights import init_dummy_weights
from sarathi.model_executor.layers.rotary import RotaryEmbedding
from sarathi.model_executor.model_loader import build_model
from sarathi.model_executor.model_shape import load_model_shape
from sarathi.model_executor.models.llama import ForwardContext
from sarathi.model_executor.presets import write_preset


def kernel_breakdown(replay: Callable[[], object], step_ms: float, steps: int = 10) -> list[dict]:
    """Per kernel name over ``steps`` graph replays (CUPTI traces each node), per step: the
    time its calls add to the GPU's busy span (kernels overlap under programmatic dependent
    launch, so their own durations would count the waits twice); the last row is the gap:
    step time in which no kernel ran."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            replay()
        torch.cuda.synchronize()
    line = gpu_timeline(prof.events())
    rows = [
        {"kernel": name[:90], "calls_per_step": len(us) / steps, "us_per_step": sum(us) / steps}
        for name, us in line.added_us.items()
    ]
    rows.sort(key=lambda r: -r["us_per_step"])
    rows.append(
        {
            "kernel": "(gaps: step time not in a kernel)",
            "calls_per_step": sum(r["calls_per_step"] for r in rows),
            "us_per_step": step_ms * 1e3 - line.busy_us / steps,
        }
    )
    return rows


class Setup:
    """One model shape with random weights and a vattention cache of ``batch`` slots."""

    def __init__(self, preset: str, batch: int, context: int, backend: str) -> None:
        folder = write_preset(preset, tempfile.mkdtemp(prefix="roofline-"))
        self.shape = replace(load_model_shape(folder))
        self.dev = torch.device("cuda")
        self.model = build_model(self.shape, torch.bfloat16, self.dev)
        init_dummy_weights(self.model, 0)
        s = self.shape
        max_len = context + 64
        # Whole blocks per slot: a block covers many tokens (2 MiB pages per layer).
        geometry = vattention.plan_geometry(
            s.num_layers, s.num_kv_heads, s.head_dim, torch.bfloat16, "per_layer", 2 * 2**20
        )
        self.cache = vattention.KVCache(
            s.num_layers,
            s.num_kv_heads,
            s.head_dim,
            max_slots=batch,
            max_len=max_len,
            dtype=torch.bfloat16,
            device=self.dev,
            layout="per_layer",
            page_bytes=2 * 2**20,
            memory_budget=batch * geometry.blocks_for(context + 1) * geometry.block_bytes,
            backend="cuda",
        )
        self.slots = [self.cache.alloc_slot() for _ in range(batch)]
        for slot in self.slots:
            self.cache.ensure(slot, context + 1)
        for i in range(s.num_layers):
            k, v = self.cache.layer(i)
            for slot in self.slots:  # random, never zeros: zeros can time faster
                k[slot, : context + 1].normal_()
                v[slot, : context + 1].normal_()
        self.attention = get_attention_backend(backend, self.dev, kernels=self.model.kernels)
        self.rotary = RotaryEmbedding(
            s.head_dim, s.rope_theta, s.rope_scaling, max_len, self.dev, self.model.kernels
        )
        self.batch, self.context = batch, context
        self.profile = False
        self.kernels: list[dict] = []

    def weight_bytes(self) -> int:
        """Bytes a decode step must read: every matrix once, the embedding only its rows."""
        total = 0
        for name, p in self.model.named_parameters():
            if "embed_tokens" in name and not self.shape.tie_word_embeddings:
                continue
            total += p.numel() * p.element_size()
        return total

    def kv_bytes(self) -> int:
        s = self.shape
        return self.batch * (self.context + 1) * s.num_layers * 2 * s.num_kv_heads * s.head_dim * 2

    def decode_inputs(self, graph: bool) -> tuple[torch.Tensor, ForwardContext]:
        dev, b, ctx = self.dev, self.batch, self.context
        slots = torch.tensor(self.slots, device=dev)
        launch = None
        if graph:  # as the engine's graphs capture it
            sms = torch.cuda.get_device_properties(0).multi_processor_count
            kv = self.shape.num_kv_heads
            group = self.shape.num_heads // kv
            launch = FixedLaunch(decode_launch(b, kv, group, sms), decode_splits(b, kv, sms))
        meta = AttentionMetadata(
            slot_of_token=slots,
            positions=torch.full((b,), ctx, device=dev),
            num_decodes=b,
            decode_slots=slots,
            decode_context_lens=torch.full((b,), ctx + 1, device=dev),
            max_decode_context=ctx + 1,
            prefills=[],
            launch=launch,
        )
        ids = torch.randint(10, 1000, (b,), device=dev)
        return ids, ForwardContext(meta, self.cache, self.attention, self.rotary)

    def decode_ms(self, graph: bool) -> float:
        ids, ctx = self.decode_inputs(graph)

        def step() -> torch.Tensor:
            return self.model.compute_logits(self.model(ids, ctx))

        with torch.inference_mode():
            if not graph:
                return bench_ms(step)
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                step()
            # Back-to-back replays: the host's launch of a graph of ~1,000 nodes overlaps the
            # previous replay, as in an engine that launches ahead; this times the GPU.
            ms = bench_ms(g.replay, inner=4)
            if self.profile:
                self.kernels = kernel_breakdown(g.replay, ms)
            return ms

    def prefill_ms(self, n: int) -> float:
        dev = self.dev
        slot = self.slots[0]
        meta = AttentionMetadata(
            slot_of_token=torch.full((n,), slot, device=dev),
            positions=torch.arange(n, device=dev),
            num_decodes=0,
            decode_slots=torch.empty(0, dtype=torch.long, device=dev),
            decode_context_lens=torch.empty(0, dtype=torch.long, device=dev),
            max_decode_context=0,
            prefills=[PrefillChunk(slot, 0, n)],
            chunks=chunk_table([PrefillChunk(slot, 0, n)], 0, dev),
        )
        ids = torch.randint(10, 1000, (n,), device=dev)
        ctx = ForwardContext(meta, self.cache, self.attention, self.rotary)
        with torch.inference_mode():
            # Logits of the last token only, as the engine computes them.
            return bench_ms(lambda: self.model.compute_logits(self.model(ids, ctx)[-1:]), reps=10)

    def prefill_flops(self, n: int) -> float:
        s = self.shape
        matmul_params = sum(
            p.numel()
            for name, p in self.model.named_parameters()
            if p.dim() == 2 and "embed_tokens" not in name and "lm_head" not in name
        )
        attn = 2 * 2 * s.num_layers * s.num_heads * s.head_dim * n * (n + 1) / 2  # causal
        return 2 * matmul_params * n + attn + 2 * s.hidden_size * s.vocab_size

    def close(self) -> None:
        self.cache.close()
        del self.model
        torch.cuda.empty_cache()


def _case(text: str) -> tuple[str, int, int]:
    try:
        preset, batch, context = text.split(":")
        return preset, int(batch), int(context)
    except ValueError:
        raise SystemExit(f"roofline: a case is PRESET:BATCH:CONTEXT, got {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="triton", help="Attention backend (triton).")
    ap.add_argument("--json", default=None, help="Write results to this JSON file.")
    # The case selections exclude one another: a combination would drop all but one.
    pick = ap.add_mutually_exclusive_group()
    pick.add_argument("--quick", action="store_true", help="Fewer configurations (a smoke run).")
    pick.add_argument("--prefill-only", action="store_true", help="Only the prefill case.")
    pick.add_argument(
        "--case",
        action="append",
        default=[],
        metavar="PRESET:BATCH:CONTEXT",
        help="Only these decode cases (repeat the flag), no prefill "
        "(e.g. --case llama2-7b:1:512 --case llama3-8b:1:2048).",
    )
    pick.add_argument(
        "--profile",
        default=None,
        metavar="PRESET:BATCH:CONTEXT",
        help="Only this decode case, graphed, with the GPU time of each kernel "
        "per step (e.g. llama3-8b:1:2048).",
    )
    args = ap.parse_args()
    decode_cases = [
        ("llama2-7b", 1, 512),
        ("llama2-7b", 1, 4096),
        ("llama3-8b", 1, 2048),
        ("llama3-8b", 16, 2048),
        ("llama3-8b", 64, 2048),
        ("llama3-8b", 128, 2048),
    ]
    if args.quick:
        decode_cases = decode_cases[:1]
    if args.prefill_only:
        decode_cases = []
    if args.case:
        decode_cases = [_case(c) for c in args.case]
    if args.profile:
        decode_cases = [_case(args.profile)]
    require_cuda("roofline")
    bw, mm = copy_bandwidth(), matmul_rate()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s, bf16 matmul {mm / 1e12:.0f} TFLOP/s")
    rows, profiles = [], []
    for preset, batch, context in decode_cases:
        st = Setup(preset, batch, context, args.backend)
        st.profile = bool(args.profile)
        floor_ms = (st.weight_bytes() + st.kv_bytes()) / bw * 1e3
        for graph in (False, True):
            ms = st.decode_ms(graph)
            rows.append(
                {
                    "test": "decode",
                    "model": preset,
                    "batch": batch,
                    "context": context,
                    "graph": graph,
                    "ms": ms,
                    "floor_ms": floor_ms,
                    "weight_GB": st.weight_bytes() / 1e9,
                    "kv_GB": st.kv_bytes() / 1e9,
                    "GB_per_s": (st.weight_bytes() + st.kv_bytes()) / ms / 1e6,
                    "frac_of_bw": floor_ms / ms,
                    "tokens_per_s": batch / ms * 1e3,
                }
            )
            print(rows[-1])
        if st.kernels:
            print_table(st.kernels, ["kernel", "calls_per_step", "us_per_step"])
            profiles.append(
                {"model": preset, "batch": batch, "context": context, "kernels": st.kernels}
            )
        st.close()
    if not (args.quick or args.profile or args.case):
        st = Setup("llama3-8b", 1, 2048, args.backend)
        ms = st.prefill_ms(2048)
        flops = st.prefill_flops(2048)
        rows.append(
            {
                "test": "prefill",
                "model": "llama3-8b",
                "batch": 1,
                "context": 2048,
                "graph": False,
                "ms": ms,
                "floor_ms": flops / mm * 1e3,
                "TFLOP_per_s": flops / ms / 1e9,
                "frac_of_mm": flops / (ms / 1e3) / mm,
            }
        )
        print(rows[-1])
        st.close()
    print_table(
        rows,
        [
            "test",
            "model",
            "batch",
            "context",
            "graph",
            "ms",
            "floor_ms",
            "GB_per_s",
            "frac_of_bw",
            "tokens_per_s",
            "TFLOP_per_s",
            "frac_of_mm",
        ],
    )
    write_json(
        args.json,
        {
            "info": run_info(),
            "backend": args.backend,
            "copy_GB_per_s": bw / 1e9,
            "matmul_TFLOP_per_s": mm / 1e12,
            "results": rows,
            "profiles": profiles,
        },
    )


if __name__ == "__main__":
    main()
