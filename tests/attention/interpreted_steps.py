"""Run by test_interpreted_steps.py in a subprocess with TRITON_INTERPRET=1: the Triton
kernels (attention, RMSNorm, the fused draw), and whole engine steps laid out as the CUDA
graphs lay them out (fixed grids over the padded step buffer, decode count read on the
device, the prefill tile table), executed by Triton's interpreter on the CPU, against the
SDPA reference and the eager engine. Prints OK at the end."""

from __future__ import annotations

import math
import sys

import torch

from sarathi import LLM, SamplingParams
from sarathi.model_executor.attention.launch import (PrefillLaunch, decode_splits, prefill_launch,
                                                     prefill_tiles)
from sarathi.model_executor.attention.metadata import AttentionMetadata, PrefillChunk, chunk_table
from sarathi.model_executor.attention.torch_backend import TorchAttention
from sarathi.model_executor.attention.triton_backend import TritonAttention
from sarathi.model_executor.attention.triton_decode import decode_attention
from sarathi.model_executor.attention.triton_prefill import prefill_attention

from tests.interpreter import patch_scalar_index

patch_scalar_index()


def check_kernels() -> None:
    torch.manual_seed(0)
    slots, max_len, hkv, hq, d, scale = 6, 256, 2, 4, 32, 0.2
    k, v = torch.randn(slots, max_len, hkv, d), torch.randn(slots, max_len, hkv, d)
    decodes = [(0, 17), (1, 100), (2, 64)]  # (slot, context)
    prefills = [PrefillChunk(3, 10, 20), PrefillChunk(4, 0, 70)]
    nd = len(decodes)
    t = nd + sum(n for *_, n in prefills)
    q = torch.randn(t, hq, d)
    dslots = torch.tensor([s for s, _ in decodes])
    dlens = torch.tensor([n for _, n in decodes])
    pos = torch.cat([dlens - 1] + [torch.arange(st, st + n) for _, st, n in prefills])
    sot = torch.cat([dslots] + [torch.full((n,), s) for s, _, n in prefills])
    meta = AttentionMetadata(sot, pos, nd, dslots, dlens, int(dlens.max()), prefills)
    # The default prefill launch (keys and values through tensor descriptors), the same with
    # pointer loads, and GQA packing (both query heads of a KV group per program).
    launches = [None, PrefillLaunch(64, 64, 4, 3, tma=False),
                PrefillLaunch(16, 16, 4, 1, packed=True)]
    # Decode splits: the default count (two here), and more splits than the contexts have
    # key blocks (the kernel sizes them from each context: the last ones stay empty).
    for window, splits in ((None, None), (7, None), (None, 8), (7, 8)):
        want = TorchAttention().forward(q, k, v, meta, scale, window)
        for launch in launches:
            out = torch.full_like(q, float("nan"))
            decode_attention(q[:nd], k, v, dslots, dlens, scale, window,
                             out[:nd], 4, splits)
            c = chunk_table(prefills, nd, q.device)
            assert c is not None
            prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, scale,
                              window, out, launch=launch)
            err = (out - want).abs().max().item()
            assert err < 1e-4, (
                f"eager kernels ({launch}, window {window}, splits {splits}) differ by {err}")
    ref = TorchAttention().forward(q, k, v, meta, scale, None)

    # As a mixed-step graph runs them: 8 decode rows of which the first 3 are decodes, a
    # chunk table padded to 4 entries, one program per tile of a padded tile table.
    for launch in launches:
        block_m = (launch or prefill_launch(d)).block_m
        check_graph_shaped(q, k, v, ref, decodes, prefills, block_m, launch)


def check_graph_shaped(  # type: ignore[no-untyped-def]
    q, k, v, ref, decodes, prefills, block_m, launch
):
    t, hq, d = q.shape
    max_len, hkv = k.shape[1], k.shape[2]
    scale, nd = 0.2, len(decodes)
    dslots = torch.tensor([s for s, _ in decodes])
    dlens = torch.tensor([n for _, n in decodes])
    rows, cap_chunks, pad_slot = 8, 4, 5
    ds = torch.full((rows,), pad_slot)
    ds[:nd] = dslots
    dl = torch.ones(rows, dtype=torch.long)
    dl[:nd] = dlens
    table = torch.zeros(4, cap_chunks, dtype=torch.long)
    off = nd
    for i, (s, st, n) in enumerate(prefills):
        table[:, i] = torch.tensor([s, st, n, off])
        off += n
    chunks, blocks = prefill_tiles([(st, n) for _, st, n in prefills], block_m)
    n_tiles = math.ceil(t / block_m) + cap_chunks
    tile_chunk = torch.full((n_tiles,), -1)
    tile_block = torch.zeros(n_tiles, dtype=torch.long)
    tile_chunk[:len(chunks)] = torch.from_numpy(chunks)
    tile_block[:len(blocks)] = torch.from_numpy(blocks)
    qq = torch.cat([q, torch.zeros(rows, hq, d)])
    out2 = torch.full_like(qq, float("nan"))
    decode_attention(qq[:rows], k, v, ds, dl, scale, None, out2[:rows], 4,
                     decode_splits(16, hkv, 4), None, torch.tensor([nd]))
    prefill_attention(qq, k, v, table[0], table[1], table[2], table[3], t, scale, None, out2,
                      None, (tile_chunk, tile_block), launch)
    err = (out2[:t] - ref).abs().max().item()
    assert err < 1e-4, f"graph-shaped kernels ({launch}) differ from SDPA by {err}"
    assert torch.isnan(out2[t:]).all(), "the kernels wrote rows past the step"


def engine(graph_shaped: bool, overlap: bool, lm_head_in_graph: bool = True
           ) -> tuple[LLM, dict[str, int]]:
    """``graph_shaped``: steps run the graphs' forwards (what a replay runs) directly;
    ``lm_head_in_graph`` False: decode graphs in their tensor-parallel form."""
    llm = LLM("demo", max_num_seqs=5, chunk_size=24, overlap_scheduling=overlap,
              dtype="float32")
    runner = llm.engine.executor.worker.runner
    runner.attention = TritonAttention(num_sms=4)
    calls = {"decode": 0, "mixed": 0}
    if graph_shaped:
        g = runner.step_graphs(num_sms=4)
        g.lm_head_in_graph = lm_head_in_graph
        llm.engine.scheduler.max_running = runner.cache.max_slots - 1  # the pad slot

        def replay(kind: str, size: int) -> torch.Tensor:
            calls[kind] += 1
            with torch.inference_mode():
                if kind == "decode":
                    return g._decode_forward(size)
                return g._mixed_forward(g.mixed_shapes[size])

        g._replay = replay  # type: ignore[method-assign]
        runner.graphs = g
    return llm, calls


def check_steps(overlap: bool, lm_head_in_graph: bool = True) -> None:
    prompts = [[5 + i + j for j in range(3 + 7 * i)] for i in range(5)]
    params = [SamplingParams(temperature=0.0, max_tokens=6 + 3 * i, ignore_eos=True)
              for i in range(5)]
    eager, _ = engine(False, overlap)
    shaped, calls = engine(True, overlap, lm_head_in_graph)
    want = [o.outputs[0].token_ids for o in eager.generate(prompts, params, use_tqdm=False)]
    got = [o.outputs[0].token_ids for o in shaped.generate(prompts, params, use_tqdm=False)]
    assert got == want, (f"graph-shaped steps (overlap={overlap}, LM head in graph "
                         f"{lm_head_in_graph}) gave {got}, eager {want}")
    assert calls["decode"] and calls["mixed"], calls


def check_norms() -> None:
    """RMSNorm with several short rows per program (per-head q/k norms) and one long row per
    program, against the reference."""
    from sarathi.model_executor.layers import fused
    from sarathi.model_executor.layers.layernorm import RMSNorm

    torch.manual_seed(1)
    for rows, size in [(3, 4096), (37, 1024), (300, 128), (5, 96)]:
        norm = RMSNorm(size, 1e-5).to(torch.bfloat16)
        norm.weight.data.normal_()
        x = torch.randn(rows, size, dtype=torch.bfloat16) * 3
        err = (fused.rms_norm(x, norm.weight, norm.eps).float() - norm.reference(x).float())
        assert err.norm() / norm.reference(x).float().norm() < 1e-2, (rows, size)
    qkv = torch.randn(9, 16 * 128 + 2 * 8 * 128)  # q heads: a strided view of the fused qkv
    q = qkv[:, :16 * 128].view(9, 16, 128)
    norm = RMSNorm(128, 1e-6)
    norm.weight.data.normal_()
    assert torch.allclose(fused.rms_norm(q, norm.weight, norm.eps), norm.reference(q), atol=1e-5)


def check_rotary_sums() -> None:
    """The rotary kernel reading a one-row q|k|v matmul's split sums gives the bits it gives
    on the summed output (q, and k and v in the cache)."""
    from sarathi.model_executor.layers import fused, gemv

    torch.manual_seed(2)
    hq, hkv, d, hidden = 4, 2, 32, 64
    n = (hq + 2 * hkv) * d
    x = torch.randn(1, hidden).to(torch.bfloat16)
    w = torch.randn(n, hidden).to(torch.bfloat16)
    sums = gemv.gemv(x, w, None, gemv.GemvConfig(16, 16, 4, 4), keep_splits=True)
    assert isinstance(sums, gemv.SplitSums) and sums.parts.shape[0] == 4
    cos, sin = torch.randn(16, d), torch.randn(16, d)
    pos, index = torch.tensor([5]), (torch.tensor([1]), torch.tensor([3]))
    results = []
    for qkv, given in ((sums.parts[:1], sums), (sums.total(), None)):
        q, k, v = qkv.split([hq * d, hkv * d, hkv * d], dim=-1)
        caches = torch.zeros(2, 3, 8, hkv, d, dtype=torch.bfloat16)
        out = fused.rotary_store_kv(q.view(1, hq, d), k.view(1, hkv, d), v.view(1, hkv, d),
                                    cos, sin, pos, caches[0], caches[1], index, sums=given)
        results.append((out, caches))
    (q1, c1), (q2, c2) = results
    assert q1.dtype == torch.bfloat16 and torch.equal(q1, q2) and torch.equal(c1, c2)
    assert c1[1, 1, 3].abs().sum() > 0  # v landed in its cache row


def check_decode_rope() -> None:
    """Batch-1 decode with the rotary and the K/V write inside the decode kernel
    (DecodeRope, from a q|k|v GEMV's split sums) gives the bits of the rotary kernel then
    the decode kernel: the output and the cache, with the newest position in a split's
    first block or in a later one (read back after the kernel's own write), paged too.
    The interpreter's bfloat16 dot products are not exact, so bfloat16 checks the rotary's
    roundings through the cache only."""
    for dtype in (torch.float32, torch.bfloat16):
        _check_decode_rope(dtype)


def _check_decode_rope(dtype: torch.dtype) -> None:
    from sarathi.model_executor.attention.metadata import DecodeRope
    from sarathi.model_executor.layers import fused, gemv

    torch.manual_seed(4)
    hq, hkv, d, hidden, slots, max_len, page = 4, 2, 32, 64, 3, 256, 16
    n_qkv = (hq + 2 * hkv) * d
    x = torch.randn(1, hidden).to(dtype)
    w = (torch.randn(n_qkv, hidden) / 4).to(dtype)
    sums = gemv.gemv(x, w, None, gemv.GemvConfig(16, 16, 4, 4), keep_splits=True)
    assert isinstance(sums, gemv.SplitSums)
    q, k, v = sums.parts[:1].split([hq * d, hkv * d, hkv * d], dim=-1)
    q, k, v = q.view(1, hq, d), k.view(1, hkv, d), v.view(1, hkv, d)
    angles = torch.rand(max_len, d // 2) * 6.3
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)
    base_k = torch.randn(slots, max_len, hkv, d).to(dtype)
    base_v = torch.randn(slots, max_len, hkv, d).to(dtype)
    table = torch.arange(slots * max_len // page, dtype=torch.int32).view(slots, -1)
    slot = torch.tensor([1])
    # (context, splits, paged): the newest position in a split's first block (two splits of
    # 128 keys at 64-key blocks); in the second block of the only split; the same paged; the
    # default split count.
    for n, splits, paged in ((150, 2, False), (100, 1, False), (100, 1, True), (37, None, False)):
        lens, pos = torch.tensor([n]), torch.tensor([n - 1])
        outs, caches = [], []
        for fused_rope in (False, True):
            kc, vc = base_k.clone(), base_v.clone()
            if paged:
                kc, vc = kc.view(-1, page, hkv, d), vc.view(-1, page, hkv, d)
                index = (table[slot, pos // page].long(), pos % page)
            else:
                index = (slot, pos)
            bt = table if paged else None
            out = torch.full((1, hq, d), float("nan"), dtype=dtype)
            if fused_rope:
                rope = DecodeRope(k, v, cos, sin, pos, dtype, 4, sums.parts.stride(0))
                decode_attention(q, kc, vc, slot, lens, 0.3, None, out, 4, splits, bt,
                                 rope=rope)
            else:
                qr = fused.rotary_store_kv(q, k, v, cos, sin, pos, kc, vc, index, sums=sums)
                decode_attention(qr, kc, vc, slot, lens, 0.3, None, out, 4, splits, bt)
                kd, vd = kc.view(slots, max_len, hkv, d), vc.view(slots, max_len, hkv, d)
                ref = TorchAttention().forward(
                    qr.float(), kd.float(), vd.float(),
                    AttentionMetadata(slot, pos, 1, slot, lens, n, []), 0.3, None,
                )  # fmt: skip
                exact = dtype == torch.float32
                assert not exact or (out - ref).abs().max() < 1e-4, (n, splits, paged)
            outs.append(out)
            caches.append((kc, vc))
        assert dtype != torch.float32 or torch.equal(outs[0], outs[1]), (n, splits, paged)
        assert torch.equal(caches[0][0], caches[1][0]) and torch.equal(caches[0][1], caches[1][1])
        assert not torch.equal(caches[1][0].view(slots, max_len, hkv, d), base_k)  # written


def check_gated_gemv() -> None:
    """One row through [gate; up] and silu-and-mul in one kernel: what the GEMV's summed
    output then silu_and_mul give, for float32 (the same sums, up to their order) and for
    bfloat16 against the float32 reference; the long-K loop and ragged edges included."""
    from sarathi.model_executor.kernel_switches import KernelSwitches
    from sarathi.model_executor.layers import fused

    torch.manual_seed(3)
    switches = KernelSwitches(True, "all", False)
    for dtype, inter, k in ((torch.float32, 37, 2500), (torch.bfloat16, 20, 1024)):
        x = torch.randn(1, k).to(dtype)
        w = (torch.randn(2 * inter, k) / 30).to(dtype)
        out = fused.silu_mul_linear(x, w, inter, switches)
        g, u = (x.float() @ w.float().t()).split(inter, dim=-1)
        ref = torch.nn.functional.silu(g) * u
        assert out.shape == (1, inter) and out.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert (out.float() - ref).norm() / ref.norm() < tol, dtype


def check_race() -> None:
    """The fused draw: greedy rows take torch.argmax's index, ties included (within a lane,
    across lanes, across splits); sampled rows follow the softmax."""
    from sarathi.model_executor.layers import race_sample

    race_sample.num_sms = lambda device: 4  # type: ignore[assignment]  # no GPU to ask
    vocab = 5000  # two splits of 4,096 columns
    logits = torch.full((4, vocab), -5.0, dtype=torch.bfloat16)
    for row, cols in enumerate([[700, 300], [1000, 1512], [4500, 100], [4999]]):
        logits[row, cols] = 3.0  # 1000 and 1512 share a lane; 100 and 4500 are in two splits
    slots = torch.tensor([2, 0, 3, 1])
    last = torch.full((4,), -1)
    got = race_sample.race_sample(logits, torch.zeros(4), slots, last, 0)
    assert got.tolist() == torch.argmax(logits, dim=1).tolist() == [300, 1000, 100, 4999], got
    assert last[slots].tolist() == got.tolist()

    hot, values = [3, 600, 2100, 4700], torch.tensor([1.0, 0.5, 0.0, -0.5])
    logits = torch.full((64, vocab), -30.0)
    logits[:, hot] = values
    counts = torch.zeros(vocab)
    for seed in range(20):
        drawn = race_sample.race_sample(logits, torch.full((64,), 0.8), torch.arange(64),
                                        torch.zeros(64, dtype=torch.long), seed)
        counts += torch.bincount(drawn, minlength=vocab).float()
    freq = counts / counts.sum()
    want = torch.zeros(vocab)
    want[hot] = torch.softmax(values / 0.8, 0)  # the other tokens' share is below 1e-12
    tv = 0.5 * (freq - want).abs().sum().item()
    assert tv < 0.06, (tv, counts[hot], want[hot])


if __name__ == "__main__":
    check_race()
    check_norms()
    check_rotary_sums()
    check_gated_gemv()
    check_decode_rope()
    check_kernels()
    check_steps(overlap=False)
    check_steps(overlap=True)
    check_steps(overlap=False, lm_head_in_graph=False)  # the tensor-parallel form
    print("OK")
    sys.exit(0)
