"""Run under TRITON_INTERPRET=1 by test_all_reduce_norm.py: the fused all-reduce + residual
add + RMSNorm of a row-parallel one-row matmul, each rank of a two-rank group simulated in
turn (the interpreter runs one program at a time, so the peer's barrier flag is set
beforehand, as if it had arrived first). Prints OK."""

import torch

from sarathi.model_executor.layers import fused, gemv
from sarathi.model_executor.layers.all_reduce_norm import PeerParts, all_reduce_add_rms_norm
from tests.interpreter import patch_scalar_index

patch_scalar_index()

WORLD, N, K, EPS = 2, 96, 256, 1e-5


def main() -> None:
    torch.manual_seed(0)
    x = [torch.randn(1, K).to(torch.bfloat16) for _ in range(WORLD)]  # each rank's input shard
    weights = [torch.randn(N, K).to(torch.bfloat16) for _ in range(WORLD)]
    residual = torch.randn(1, N).to(torch.bfloat16)
    norm_weight = torch.randn(N)
    config = gemv.GemvConfig(16, 64, 4, 4)
    buffers = [torch.full((gemv.MAX_SPLITS * N,), float("nan")) for _ in range(WORLD)]
    pads = [torch.zeros(32, dtype=torch.int32) for _ in range(WORLD)]
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers])
    pad_ptrs = torch.tensor([p.data_ptr() for p in pads])
    sums = []
    for rank in range(WORLD):
        peers = PeerParts(buffers[rank], buffer_ptrs, pad_ptrs, rank, WORLD)
        sums.append(gemv.gemv(x[rank], weights[rank], None, config, True, False, peers))
        assert isinstance(sums[-1], gemv.SplitSums) and sums[-1].peers is peers
        assert sums[-1].parts.data_ptr() == buffers[rank].data_ptr()
        try:  # a rank's share is no matmul output: only add_rms_norm finishes the sum
            sums[-1].total()
        except ValueError:
            pass
        else:
            raise AssertionError("total() of a rank's share")
    # The reference: every rank's split sums, in rank order, through the unfused kernel.
    every = torch.cat([s.parts for s in sums]).contiguous()
    want = fused.add_rms_norm(gemv.SplitSums(every, torch.bfloat16), residual, norm_weight, EPS)
    for rank, s in enumerate(sums):
        for p in range(WORLD):
            pads[p].zero_()
        for peer in range(WORLD):
            if peer != rank:  # the peer has arrived
                pads[rank][peer] = 1
        out, new_residual = all_reduce_add_rms_norm(s, residual, norm_weight, EPS)
        assert torch.equal(out, want[0]) and torch.equal(new_residual, want[1]), rank
        assert not pads[rank].any(), "this rank consumed its peers' flags"
        for peer in range(WORLD):
            if peer != rank:
                assert pads[peer][rank] == 1 and pads[peer].sum() == 1
    # The sum itself, against float64.
    exact = sum(x[r].double() @ weights[r].double().T for r in range(WORLD))
    assert torch.allclose((want[1].double() - residual.double()), exact, atol=0.15, rtol=0.02)
    print("OK")


if __name__ == "__main__":
    main()
