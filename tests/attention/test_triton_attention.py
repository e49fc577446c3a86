"""Triton attention kernels against a float32 reference on random inputs (GPU only)."""

from __future__ import annotations

import random

import pytest
import torch

from sarathi.model_executor.attention import AttentionMetadata, get_attention_backend
from sarathi.model_executor.attention.metadata import PrefillChunk, chunk_table
from sarathi.model_executor.kernel_switches import KernelSwitches, gluon_hopper
from sarathi.model_executor.pdl import supported as pdl_supported
from tests.attention.reference import reference_attention, rel_error

pytestmark = pytest.mark.gpu

BF16_TOL = 1e-2  # bf16 operands land between 1e-3 and 1e-2


def _cache(layout: str, slots: int, max_len: int, hkv: int, d: int, dtype: torch.dtype,
           layers: int = 3, layer: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    if layout == "per_layer":
        k = torch.randn(slots, max_len, hkv, d, dtype=dtype, device="cuda")
        v = torch.randn(slots, max_len, hkv, d, dtype=dtype, device="cuda")
        return k, v
    # mega: token-major over layers; a layer is a strided view.
    k = torch.randn(slots, max_len, layers, hkv, d, dtype=dtype, device="cuda")
    v = torch.randn(slots, max_len, layers, hkv, d, dtype=dtype, device="cuda")
    return k[:, :, layer], v[:, :, layer]


def _step(rng: random.Random, slots: int, max_len: int, num_decodes: int,
          chunk_lens: list[int]) -> tuple[list[int], list[int], AttentionMetadata]:
    """A mixed step: decodes on distinct slots, then prefill chunks with random prefixes."""
    chosen = rng.sample(range(slots), num_decodes + len(chunk_lens))
    tok_slots, tok_pos, dec_lens, prefills = [], [], [], []
    for s in chosen[:num_decodes]:
        n = rng.randint(1, max_len)
        tok_slots.append(s)
        tok_pos.append(n - 1)
        dec_lens.append(n)
    for s, n in zip(chosen[num_decodes:], chunk_lens):
        start = rng.randint(0, max_len - n)
        tok_slots.extend([s] * n)
        tok_pos.extend(range(start, start + n))
        prefills.append(PrefillChunk(s, start, n))
    dev = torch.device("cuda")
    meta = AttentionMetadata(
        slot_of_token=torch.tensor(tok_slots, device=dev),
        positions=torch.tensor(tok_pos, device=dev), num_decodes=num_decodes,
        decode_slots=torch.tensor(chosen[:num_decodes], device=dev),
        decode_context_lens=torch.tensor(dec_lens, dtype=torch.long, device=dev),
        max_decode_context=max(dec_lens, default=0), prefills=prefills,
        chunks=chunk_table(prefills, num_decodes, dev))
    return tok_slots, tok_pos, meta


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
@pytest.mark.parametrize("hq,hkv,d", [(32, 8, 128), (32, 32, 128), (16, 8, 128), (8, 2, 64),
                                      (14, 2, 64)])
@pytest.mark.parametrize("window", [None, 77])
def test_mixed_step_matches_reference(layout: str, hq: int, hkv: int, d: int,
                                      window: int | None) -> None:
    rng = random.Random(hash((layout, hq, hkv, d, window)) & 0xFFFF)
    torch.manual_seed(rng.randrange(1 << 30))
    slots, max_len = 24, 1500
    k, v = _cache(layout, slots, max_len, hkv, d, torch.bfloat16)
    tok_slots, tok_pos, meta = _step(rng, slots, max_len, num_decodes=9,
                                     chunk_lens=[1, 37, 200, 64])
    q = torch.randn(len(tok_slots), hq, d, dtype=torch.bfloat16, device="cuda")
    backend = get_attention_backend("triton", torch.device("cuda"))
    scale = d ** -0.5
    out = backend.forward(q, k, v, meta, scale, window)
    ref = reference_attention(q, k, v, tok_slots, tok_pos, scale, window)
    assert rel_error(out, ref) < BF16_TOL


@pytest.mark.parametrize("pdl", [False, True])
@pytest.mark.parametrize("warp_prefill", [False, True])
def test_overlapped_mixed_step_equals_serial_eager_and_graphed(pdl: bool,
                                                              warp_prefill: bool) -> None:
    """The decode kernel overlapping the prefill kernel (Triton's, or on Hopper the Gluon
    one) writes what the two one after the other write, bit for bit, eagerly and replayed
    from a graph, and the kernel after them (a copy) sees both outputs whole."""
    cuda = torch.device("cuda")
    if warp_prefill and not gluon_hopper(cuda):
        pytest.skip("the Gluon prefill kernel needs a Hopper GPU and a Triton with Gluon")
    rng = random.Random(5)
    torch.manual_seed(5)
    k, v = _cache("mega", 24, 1500, 8, 128, torch.bfloat16)
    tok_slots, _, meta = _step(rng, 24, 1500, num_decodes=9, chunk_lens=[1, 37, 200, 64])
    q = torch.randn(len(tok_slots), 32, 128, dtype=torch.bfloat16, device="cuda")
    serial = get_attention_backend(
        "triton", cuda, kernels=KernelSwitches(fused=True, warp_prefill=warp_prefill))
    kernels = KernelSwitches(fused=True, pdl=pdl and pdl_supported(cuda), overlap=True,
                             warp_prefill=warp_prefill)
    overlapped = get_attention_backend("triton", cuda, kernels=kernels)
    want = serial.forward(q, k, v, meta, 0.125, None)
    assert torch.equal(overlapped.forward(q, k, v, meta, 0.125, None).clone(), want)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capture stream, as torch advises
        overlapped.forward(q, k, v, meta, 0.125, None)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = overlapped.forward(q, k, v, meta, 0.125, None)
        copied = out.clone()
    out.zero_()
    copied.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, want) and torch.equal(copied, want)


@pytest.mark.parametrize("hq,hkv,d", [(32, 8, 128), (16, 8, 128), (32, 32, 128), (14, 2, 64)])
@pytest.mark.parametrize("window", [None, 77])
def test_packed_prefill_matches_reference(hq: int, hkv: int, d: int, window: int | None) -> None:
    """GQA packing (a program takes every query head of a KV group): the reference's output,
    eager and over a graph's tile table."""
    from sarathi.model_executor.attention.launch import PrefillLaunch
    from sarathi.model_executor.attention.triton_prefill import prefill_attention

    rng = random.Random(hash((hq, hkv, d, window)) & 0xFFFF)
    torch.manual_seed(rng.randrange(1 << 30))
    k, v = _cache("mega", 8, 1500, hkv, d, torch.bfloat16)
    tok_slots, tok_pos, meta = _step(rng, 8, 1500, num_decodes=0, chunk_lens=[1, 37, 200, 64])
    q = torch.randn(len(tok_slots), hq, d, dtype=torch.bfloat16, device="cuda")
    ref = reference_attention(q, k, v, tok_slots, tok_pos, d ** -0.5, window)
    c = meta.chunks
    assert c is not None
    for launch in (PrefillLaunch(32, 64, 4, 3, packed=True), PrefillLaunch(16, 64, 8, 3, True)):
        out = torch.full_like(q, float("nan"))
        prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, d ** -0.5,
                          window, out, launch=launch)
        assert rel_error(out, ref) < BF16_TOL, launch
        blocks = [(i, b) for i, (_, _, n) in enumerate(meta.prefills)
                  for b in range(-(-n // launch.block_m))]
        tiles = (torch.tensor([i for i, _ in blocks] + [-1, -1], device="cuda"),
                 torch.tensor([b for _, b in blocks] + [0, 0], device="cuda"))
        out = torch.full_like(q, float("nan"))
        prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, d ** -0.5,
                          window, out, tiles=tiles, launch=launch)
        assert rel_error(out, ref) < BF16_TOL, launch


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
@pytest.mark.parametrize("window", [None, 77])
def test_prefill_descriptor_loads_match_pointer_loads(layout: str, window: int | None) -> None:
    """Keys and values through tensor descriptors (TMA, the default on Hopper) and through
    pointer loads: both the reference's output, eager and over a tile table in the order
    the model runner builds it (longest blocks first)."""
    from sarathi.model_executor.attention.launch import PrefillLaunch, prefill_tiles
    from sarathi.model_executor.attention.triton_prefill import prefill_attention

    rng = random.Random(hash((layout, window)) & 0xFFFF)
    torch.manual_seed(rng.randrange(1 << 30))
    k, v = _cache(layout, 8, 1500, 8, 128, torch.bfloat16)
    tok_slots, tok_pos, meta = _step(rng, 8, 1500, num_decodes=0, chunk_lens=[1, 37, 200, 960])
    q = torch.randn(len(tok_slots), 32, 128, dtype=torch.bfloat16, device="cuda")
    ref = reference_attention(q, k, v, tok_slots, tok_pos, 128 ** -0.5, window)
    c = meta.chunks
    assert c is not None
    for launch in (PrefillLaunch(64, 64, 4, 3), PrefillLaunch(64, 64, 4, 3, tma=False)):
        out = torch.full_like(q, float("nan"))
        prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, 128 ** -0.5,
                          window, out, launch=launch)
        assert rel_error(out, ref) < BF16_TOL, launch
        chunks, blocks = prefill_tiles([(s, n) for _, s, n in meta.prefills], launch.block_m)
        tiles = (torch.tensor(chunks.tolist() + [-1, -1], device="cuda"),
                 torch.tensor(blocks.tolist() + [0, 0], device="cuda"))
        tiled = torch.full_like(q, float("nan"))
        prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, 128 ** -0.5,
                          window, tiled, tiles=tiles, launch=launch)
        assert torch.equal(tiled, out), launch


@pytest.mark.parametrize("batch,max_len,splits,min_blocks,window",
                         [(1, 16384, None, None, None), (3, 4096, 7, None, None),
                          (64, 2048, None, None, None), (5, 300, 1, None, None),
                          # more splits than short contexts have blocks
                          (2, 100, 64, None, None),
                          # many programs per SM: 32-key blocks
                          (256, 700, None, None, None), (256, 700, 3, None, None),
                          # splits of at least min_blocks blocks: at short contexts (and
                          # under a sliding window) the later splits stay empty and the
                          # merge must leave them out
                          (1, 512, 9, 2, None), (1, 512, 9, 2, 77), (1, 4096, 9, 2, None),
                          (1, 4096, 9, 2, 77), (3, 700, 9, 3, None), (3, 700, 9, 3, 77),
                          (2, 100, 64, 2, None), (2, 100, 64, 2, 77)])
def test_decode_splits_match_reference(batch: int, max_len: int, splits: int | None,
                                       min_blocks: int | None, window: int | None) -> None:
    from sarathi.model_executor.attention.launch import DecodeLaunch
    from sarathi.model_executor.attention.triton_decode import decode_attention

    torch.manual_seed(batch * 1000 + max_len + (min_blocks or 0))
    hq, hkv, d = 32, 8, 128
    k, v = _cache("per_layer", batch + 2, max_len, hkv, d, torch.bfloat16)
    lens = [max_len] + [random.Random(i).randint(1, max_len) for i in range(batch - 1)]
    slot_list = list(range(2, batch + 2))
    q = torch.randn(batch, hq, d, dtype=torch.bfloat16, device="cuda")
    out = torch.full_like(q, float("nan"))  # poison: every element must be written
    launch = DecodeLaunch(64, 4, 2, min_blocks) if min_blocks else None
    decode_attention(q, k, v, torch.tensor(slot_list, device="cuda"),
                     torch.tensor(lens, device="cuda"), d ** -0.5, window, out, 132, splits,
                     launch=launch)
    ref = reference_attention(q, k, v, slot_list, [n - 1 for n in lens], d ** -0.5, window)
    assert rel_error(out, ref) < BF16_TOL


def _paged(k: torch.Tensor, v: torch.Tensor, block_size: int, seed: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same cache as block pools with the blocks scattered in random order (plus spare
    blocks), and the block table that finds them."""
    slots, max_len = k.shape[:2]
    per_slot = -(-max_len // block_size)
    total = slots * per_slot + 5
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:slots * per_slot]
    table = order.view(slots, per_slot).to(torch.int32).cuda()
    pad = per_slot * block_size - max_len
    pools = []
    for x in (k, v):
        pool = torch.randn(total, block_size, *x.shape[2:], dtype=x.dtype, device="cuda")
        blocks = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)).reshape(
            slots * per_slot, block_size, *x.shape[2:])
        pool[table.flatten().long()] = blocks
        pools.append(pool)
    return pools[0], pools[1], table


@pytest.mark.parametrize("block_size", [16, 32, 256])
@pytest.mark.parametrize("hq,hkv,d", [(32, 8, 128), (8, 2, 64)])
@pytest.mark.parametrize("window", [None, 77])
def test_paged_kernels_match_reference(block_size: int, hq: int, hkv: int, d: int,
                                       window: int | None) -> None:
    """The paged variants (block-table address translation) against the same reference."""
    from sarathi.model_executor.attention.triton_backend import TritonAttention

    rng = random.Random(block_size * 7 + hq + d + (window or 0))
    torch.manual_seed(rng.randrange(1 << 30))
    slots, max_len = 16, 1500
    k, v = _cache("per_layer", slots, max_len, hkv, d, torch.bfloat16)
    tok_slots, tok_pos, meta = _step(rng, slots, max_len, num_decodes=7,
                                     chunk_lens=[1, 45, 300])
    q = torch.randn(len(tok_slots), hq, d, dtype=torch.bfloat16, device="cuda")
    k_pool, v_pool, table = _paged(k, v, block_size, rng.randrange(1 << 30))
    out = TritonAttention(table).forward(q, k_pool, v_pool, meta, d ** -0.5, window)
    ref = reference_attention(q, k, v, tok_slots, tok_pos, d ** -0.5, window)
    assert rel_error(out, ref) < BF16_TOL


def test_float16_and_agreement_with_torch_backend() -> None:
    rng = random.Random(5)
    torch.manual_seed(5)
    k, v = _cache("per_layer", 8, 700, 4, 64, torch.float16)
    tok_slots, tok_pos, meta = _step(rng, 8, 700, num_decodes=3, chunk_lens=[129, 2])
    q = torch.randn(len(tok_slots), 16, 64, dtype=torch.float16, device="cuda")
    ours = get_attention_backend("triton").forward(q, k, v, meta, 0.125, None)
    meta.cache.clear()
    sdpa = get_attention_backend("torch").forward(q, k, v, meta, 0.125, None)
    ref = reference_attention(q, k, v, tok_slots, tok_pos, 0.125, None)
    assert rel_error(ours, ref) < 2e-3
    assert rel_error(ours, sdpa.float()) < 2e-3


def test_auto_picks_triton_on_cuda() -> None:
    assert get_attention_backend("auto", torch.device("cuda")).name == "triton"
    assert get_attention_backend("auto", torch.device("cuda")).graphable
    assert get_attention_backend("auto", torch.device("cpu")).name == "torch"


def test_kernels_read_caches_made_after_others_closed() -> None:
    """Caches made after others were closed (their reservations may reuse the freed
    addresses), including an empty one, are read correctly by the kernels."""
    import vattention
    from sarathi.model_executor.attention.triton_decode import decode_attention

    hq, hkv, d = 32, 8, 128
    # (slots, context); the one-slot cache is closed without mapping anything.
    for batch, context in ((8, 4096), (8, 1024), (1, 1024), (32, 1024)):
        cache = vattention.KVCache(1, hkv, d, batch, context, torch.bfloat16, "cuda",
                                   backend="cuda")
        if batch == 1:
            cache.close()
            continue
        for _ in range(batch):
            cache.ensure(cache.alloc_slot(), context)
        k, v = cache.layer(0)
        k.normal_()
        v.normal_()
        torch.cuda.synchronize()
        q = torch.randn(batch, hq, d, dtype=torch.bfloat16, device="cuda")
        out = torch.empty_like(q)
        slots = list(range(batch))
        decode_attention(q, k, v, torch.tensor(slots, device="cuda"),
                         torch.full((batch,), context, device="cuda"), d ** -0.5, None, out,
                         132)
        ref = reference_attention(q, k, v, slots, [context - 1] * batch, d ** -0.5, None)
        assert rel_error(out, ref) < BF16_TOL
        del k, v
        cache.close()


@pytest.mark.parametrize("hq,hkv,d", [(32, 32, 128), (32, 8, 128), (16, 8, 128)])
@pytest.mark.parametrize("n,window,layout", [(511, None, "per_layer"), (2048, None, "mega"),
                                              (300, 77, "per_layer")])
@pytest.mark.parametrize("pdl", [False, True])
def test_decode_rope_equals_rotary_then_decode(hq: int, hkv: int, d: int, n: int,
                                               window: int | None, layout: str,
                                               pdl: bool) -> None:
    """Batch-1 decode with the rotary and the K/V write inside the decode kernel (from a
    q|k|v GEMV's split sums), against the rotary kernel then the decode kernel: the same
    bits in the output and the cache."""
    from sarathi.model_executor.attention.metadata import DecodeRope
    from sarathi.model_executor.layers import fused, gemv
    from sarathi.model_executor.layers.rotary import RotaryEmbedding

    torch.manual_seed(n + hq)
    hidden, slots, max_len = 1024, 4, 4096
    x = torch.randn(1, hidden, dtype=torch.bfloat16, device="cuda")
    w = torch.randn((hq + 2 * hkv) * d, hidden, dtype=torch.bfloat16, device="cuda") / 30
    sums = gemv.gemv(x, w, None, gemv.GemvConfig(16, 128, 2, 8), keep_splits=True)
    assert isinstance(sums, gemv.SplitSums)
    q, k, v = sums.parts[:1].split([hq * d, hkv * d, hkv * d], dim=-1)
    q, k, v = q.view(1, hq, d), k.view(1, hkv, d), v.view(1, hkv, d)
    rot = RotaryEmbedding(d, 10000.0, None, max_len, torch.device("cuda"))
    k0, v0 = _cache(layout, slots, max_len, hkv, d, torch.bfloat16)
    slot = torch.tensor([2], device="cuda")
    lens, pos = torch.tensor([n], device="cuda"), torch.tensor([n - 1], device="cuda")
    meta = AttentionMetadata(slot, pos, 1, slot, lens, n, [])
    switches = KernelSwitches.resolve(torch.device("cuda"))
    backend = get_attention_backend(
        "triton", kernels=KernelSwitches(True, "1", pdl and switches.pdl)
    )
    results = []
    for fuse in (False, True):
        kc, vc = k0.clone(), v0.clone()
        if fuse:
            rope = DecodeRope(k, v, rot.cos, rot.sin, pos, torch.bfloat16, 2,
                              sums.parts.stride(0))
            out = backend.decode_rope(q, rope, kc, vc, meta, d**-0.5, window)
            assert out is not None
        else:
            qr = fused.rotary_store_kv(q, k, v, rot.cos, rot.sin, pos, kc, vc,
                                       backend.kv_index(meta), pdl, sums)
            out = backend.forward(qr, kc, vc, meta, d**-0.5, window)
        results.append((out, kc, vc))
    (o1, k1, v1), (o2, k2, v2) = results
    for name, a, b in (("k", k1, k2), ("v", v1, v2), ("out", o1, o2)):
        where = (a != b).nonzero()
        # Which entries differ and by how much: a few ulps on the newest row point at the
        # roundings, other rows at the store.
        assert where.shape[0] == 0, (
            f"{name}: {where.shape[0]} entries differ, first {where[:8].tolist()}, "
            f"max {(a.float() - b.float()).abs().max().item()}, "
            f"rows {sorted(set(where[:, 1].tolist())) if a.dim() == 4 else '-'}"
        )
    assert not torch.equal(k1, k0)


def test_descriptor_scratch_outlives_its_launch() -> None:
    """The prefill kernel's descriptor memory stays with the backend: reused while it fits,
    grown (the old buffer kept, a graph may hold it) when not; a releasing launch needs one."""
    from sarathi.model_executor.attention.triton_prefill import (
        DescriptorScratch,
        prefill_attention,
    )

    scratch = DescriptorScratch()
    dev = torch.device("cuda", torch.cuda.current_device())
    a = scratch.take(256, dev)
    assert scratch.take(128, dev).data_ptr() == a.data_ptr()
    b = scratch.take(1024, dev)
    assert b.numel() == 1024 and b.data_ptr() != a.data_ptr()
    assert scratch.take(512, dev).data_ptr() == b.data_ptr()
    assert len(scratch._buffers) == 2
    q = torch.zeros(4, 2, 64, device="cuda")
    with pytest.raises(ValueError, match="DescriptorScratch"):
        prefill_attention(q, q, q, q, q, q, q, 4, 1.0, None, q, release=True)
