"""Run under TRITON_INTERPRET=1 by test_all_reduce_norm.py: the fused all-reduce + residual
add + RMSNorm of a row-parallel one-row matmul, each rank of a two-rank group simulated in
turn (the interpreter runs one program at a time, so the peer's barrier flag is set
beforehand, as if it had arrived first). Prints OK."""

import torch

from sarathi.model_executor.layers import fused
from sarathi.model_executor.layers.all_reduce_norm import PeerSlot, RankSums

WORLD, N, K, EPS = 2, 96, 256, 1e-5


def main() -> None:
    torch.manual_seed(0)
    x = [torch.randn(1, K).to(torch.bfloat16) for _ in range(WORLD)]  # each rank's input shard
    weights = [torch.randn(N, K).to(torch.bfloat16) for _ in range(WORLD)]
    residual = torch.randn(1, N).to(torch.bfloat16)
    norm_weight = torch.randn(N)
    config = fused.GemvConfig(16, 64, 4, 4)
    buffers = [torch.full((fused.MAX_SPLITS * N,), float("nan")) for _ in range(WORLD)]
    pads = [torch.zeros(32, dtype=torch.int32) for _ in range(WORLD)]
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers])
    pad_ptrs = torch.tensor([p.data_ptr() for p in pads])
    sums = []
    for rank in range(WORLD):
        peers = PeerSlot(buffers[rank], buffer_ptrs, pad_ptrs, rank, WORLD, 1)
        sums.append(fused.gemv(x[rank], weights[rank], None, config, True, False, peers))
        assert isinstance(sums[-1], fused.SplitSums) and sums[-1].peers is peers
        assert sums[-1].parts.data_ptr() == buffers[rank].data_ptr()
    # The reference: every rank's split sums, in rank order, through the unfused kernel.
    every = torch.cat([s.parts for s in sums]).contiguous()
    want = fused.add_rms_norm(fused.SplitSums(every, torch.bfloat16), residual, norm_weight, EPS)
    for rank, s in enumerate(sums):
        for p in range(WORLD):
            pads[p].zero_()
        for peer in range(WORLD):
            if peer != rank:  # the peer has arrived
                pads[rank][peer] = 1
        out, new_residual = fused.add_rms_norm(s, residual, norm_weight, EPS)
        assert torch.equal(out, want[0]) and torch.equal(new_residual, want[1]), rank
        assert not pads[rank].any(), "this rank consumed its peers' flags"
        for peer in range(WORLD):
            if peer != rank:
                assert pads[peer][rank] == 1 and pads[peer].sum() == 1
    # The sum itself, against float64.
    exact = sum(x[r].double() @ weights[r].double().T for r in range(WORLD))
    assert torch.allclose((want[1].double() - residual.double()), exact, atol=0.15, rtol=0.02)
    check_rows()
    print("OK")


def check_rows() -> None:
    """Many rows (a matmul's output in each rank's slot): two programs take five rows in
    turn, each program with its own barrier flags."""
    rows, programs = 5, 2
    shares = [torch.randn(rows, N).to(torch.bfloat16) for _ in range(WORLD)]
    residual = torch.randn(rows, N).to(torch.bfloat16)
    norm_weight = torch.randn(N)
    buffers = [torch.full((8 * N,), float("nan"), dtype=torch.bfloat16) for _ in range(WORLD)]
    pads = [torch.zeros(32, dtype=torch.int32) for _ in range(WORLD)]
    buffer_ptrs = torch.tensor([b.data_ptr() for b in buffers])
    pad_ptrs = torch.tensor([p.data_ptr() for p in pads])
    total = torch.zeros(rows, N)
    for share in shares:  # rank order, in float32, as the kernel adds them
        total += share.float()
    want = fused.add_rms_norm(total.to(torch.bfloat16), residual, norm_weight, EPS)
    for rank in range(WORLD):
        peers = PeerSlot(buffers[rank], buffer_ptrs, pad_ptrs, rank, WORLD, programs)
        view = peers.view(rows, N)
        assert view is not None
        view.copy_(shares[rank])
    for rank in range(WORLD):
        peers = PeerSlot(buffers[rank], buffer_ptrs, pad_ptrs, rank, WORLD, programs)
        for p in range(WORLD):
            pads[p].zero_()
        for program in range(programs):
            for peer in range(WORLD):
                if peer != rank:
                    pads[rank][program * WORLD + peer] = 1
        got = fused.add_rms_norm(RankSums(peers.view(rows, N), peers), residual, norm_weight, EPS)
        # Within a bf16 rounding of the shares' sum (the interpreter rounds float32 to
        # bfloat16 its own way; on a GPU the two agree bit for bit).
        for g, w in zip(got, want):
            assert torch.allclose(g.float(), w.float(), rtol=1e-2, atol=0.07), rank
        assert not pads[rank].any()
        for peer in range(WORLD):
            if peer != rank:
                flags = [int(pads[peer][program * WORLD + rank]) for program in range(programs)]
                assert flags == [1] * programs and pads[peer].sum() == programs


if __name__ == "__main__":
    main()
