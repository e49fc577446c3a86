"""The warp-specialized Gluon prefill kernel (Hopper) against the float32 reference, and the
Triton backend that routes prefill chunks to it (GPU only). Overlapped with the decode
kernel: test_triton_attention.py."""

from __future__ import annotations

import random

import pytest
import torch

from sarathi.model_executor.attention import get_attention_backend
from sarathi.model_executor.kernel_switches import KernelSwitches, gluon_hopper
from tests.attention.reference import reference_attention, rel_error
from tests.attention.test_triton_attention import BF16_TOL, _cache, _step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and gluon_hopper(torch.device("cuda"))),
        reason="needs a Hopper GPU and a Triton with Gluon",
    ),
]


def _tiles(prefills: list, block_m: int, pad: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The runner's tile table (longest blocks first) plus ``pad`` empty tiles, as a graph's
    fixed grid has."""
    from sarathi.model_executor.attention.launch import prefill_tiles

    chunks, blocks = prefill_tiles([(s, n) for _, s, n in prefills], block_m)
    return (
        torch.tensor(chunks.tolist() + [-1] * pad, device="cuda"),
        torch.tensor(blocks.tolist() + [0] * pad, device="cuda"),
    )


@pytest.mark.parametrize("layout", ["per_layer", "mega"])
@pytest.mark.parametrize("hq,hkv", [(32, 8), (16, 8), (32, 32)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gluon_prefill_matches_reference(
    layout: str, hq: int, hkv: int, dtype: torch.dtype
) -> None:
    """Chunks of 1 to 960 tokens after random prefixes (block edges and a partial last
    consumer group among them): the reference's output, eager and over a tile table, and
    the two bit for bit."""
    from sarathi.model_executor.attention.gluon_prefill import gluon_prefill_attention

    rng = random.Random(hash((layout, hq, hkv, str(dtype))) & 0xFFFF)
    torch.manual_seed(rng.randrange(1 << 30))
    k, v = _cache(layout, 8, 2000, hkv, 128, dtype)
    tok_slots, tok_pos, meta = _step(
        rng, 8, 2000, num_decodes=0, chunk_lens=[1, 37, 64, 65, 128, 200, 960]
    )
    q = torch.randn(len(tok_slots), hq, 128, dtype=dtype, device="cuda")
    ref = reference_attention(q, k, v, tok_slots, tok_pos, 128**-0.5, None)
    c = meta.chunks
    assert c is not None
    out = torch.full_like(q, float("nan"))  # poison: every row must be written
    gluon_prefill_attention(q, k, v, c.slot, c.start, c.length, c.offset, c.longest, 128**-0.5, out)
    assert rel_error(out, ref) < BF16_TOL
    tiled = torch.full_like(q, float("nan"))
    gluon_prefill_attention(
        q,
        k,
        v,
        c.slot,
        c.start,
        c.length,
        c.offset,
        c.longest,
        128**-0.5,
        tiled,
        tiles=_tiles(meta.prefills, 128),
    )
    assert torch.equal(tiled, out)


@pytest.mark.parametrize("window", [None, 77])
def test_backend_routes_prefill_to_gluon(window: int | None) -> None:
    """A mixed step through the Triton backend with the switch on: the Gluon kernel for
    full-attention layers, the Triton kernel in 128-token programs for a sliding window;
    the reference's output either way, with its 128-token tile table."""
    rng = random.Random(7 if window is None else 8)
    torch.manual_seed(7)
    k, v = _cache("mega", 24, 1500, 8, 128, torch.bfloat16)
    tok_slots, tok_pos, meta = _step(rng, 24, 1500, num_decodes=9, chunk_lens=[1, 37, 200, 130])
    q = torch.randn(len(tok_slots), 32, 128, dtype=torch.bfloat16, device="cuda")
    backend = get_attention_backend(
        "triton", torch.device("cuda"), kernels=KernelSwitches(fused=True, warp_prefill=True)
    )
    assert backend.prefill_block_m(128, torch.bfloat16) == 128
    assert backend.prefill_block_m(128, torch.float32) == 64  # the Triton kernel's own
    ref = reference_attention(q, k, v, tok_slots, tok_pos, 0.125, window)
    out = backend.forward(q, k, v, meta, 0.125, window)
    assert rel_error(out, ref) < BF16_TOL
    c = meta.chunks
    assert c is not None
    c.tile_chunk, c.tile_block = _tiles(meta.prefills, 128)
    tiled = backend.forward(q, k, v, meta, 0.125, window)
    assert torch.equal(tiled, out)
