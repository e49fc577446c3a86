#!/usr/bin/env bash
# Tensor parallelism on a 2-GPU machine (mp executor: Ray is not installed there).
#
#   OUT=/some/dir bash scripts/gpu_tp.sh [PART...]      # default: all parts, in this order
#
# Parts (each fits one device call on its own; the build runs first whenever the
# vattention extension is missing, and the environment is always logged):
#   tests       NCCL check, the GPU TP tests, the TP suite on the GPUs
#   decode      Llama-2-7B shape, batch 1: TP=2 over TP=1, with CUDA graphs, then eager
#   throughput  Llama-3-8B shape, nano-vllm workload: TP=2, then TP=1 (same run)
#   allreduce   NCCL against symmetric-memory all-reduce latency (benchmarks/allreduce.py)
#   unfused     decode and throughput at TP=2 with SARATHI_FUSED_ALLREDUCE=0 (the all-reduce
#               in its own kernel before the norm): run beside decode / throughput for an A/B
#   gemv        one rank's one-row matmul shapes at TP=2 (small_m_linear.py --tp 2; not
#               in the default list: one GPU suffices)
#
# Every step logs to $OUT/<step>.log; a failing step does not stop the later ones. Benchmark
# JSON lands in $OUT. The exit status is non-zero if any step failed; a summary closes it.
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out-tp}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
PARTS=("$@")
[ ${#PARTS[@]} -gt 0 ] || PARTS=(tests decode throughput allreduce)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# NVLink multicast must stay off on these machines (NCCL, torch symmetric memory, NVSHMEM).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

STEP_TAIL=30
. scripts/gpu_steps.sh

step env 60 bash -c "nvidia-smi; nvidia-smi topo -m; env | grep -E '^NCCL_' ; $PY -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]); import torch.distributed as d; print(\"nccl\", d.is_nccl_available(), torch.cuda.nccl.version())'; git rev-parse HEAD; git status --short | head -20"
# The vattention extension (the cuda KV backend); without it the engine falls back to 'dense'.
step build 300 bash -c "$PY -c 'import vattention._C' 2>/dev/null && echo 'vattention._C already built' || $PY setup.py build_ext --inplace"

part_tests() {
  cat > "$OUT/nccl_check.py" <<'PYEOF'
# Two ranks, one all-reduce: proves NCCL works here before anything bigger runs.
import os, tempfile, torch, torch.distributed as dist, torch.multiprocessing as mp
def run(rank, path):
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{path}", rank=rank, world_size=2)
    x = torch.full((1 << 20,), float(rank + 1), device="cuda")
    dist.all_reduce(x)
    torch.cuda.synchronize()
    assert x[0].item() == 3.0, x[0].item()
    print(f"rank {rank}: all_reduce ok")
    dist.destroy_process_group()
if __name__ == "__main__":
    mp.spawn(run, args=(os.path.join(tempfile.mkdtemp(), "store"),), nprocs=2)
PYEOF
  step nccl_allreduce 90 "$PY" "$OUT/nccl_check.py"
  step pytest_gpu_tp 300 "$PY" -m pytest -m gpu tests/parallel -v -rs -p no:cacheprovider
  step pytest_tp_suite 240 "$PY" -m pytest tests/parallel -v -rs -p no:cacheprovider -m "not gpu"
}
part_decode() {
  step bench_tp_decode 240 "$PY" benchmarks/tp_decode.py --preset llama2-7b --tp 2 1 \
    --new-tokens 200 --repeats 3 --out "$OUT/tp_decode_llama2-7b.json"
  step bench_tp_decode_eager 240 "$PY" benchmarks/tp_decode.py --preset llama2-7b --tp 2 1 \
    --new-tokens 200 --repeats 3 --enforce-eager --out "$OUT/tp_decode_llama2-7b_eager.json"
}
part_throughput() {
  step bench_throughput 400 "$PY" benchmarks/throughput.py --preset llama3-8b --tp 2 1 \
    --json "$OUT/throughput_llama3-8b_tp.json"
}
part_gemv() {
  step bench_gemv_tp2 300 "$PY" benchmarks/small_m_linear.py --preset llama2-7b --tp 2 \
    --rows 1 --json "$OUT/small_m_linear_llama2_tp2.json"
}
part_unfused() {
  step bench_tp_decode_unfused 240 env SARATHI_FUSED_ALLREDUCE=0 "$PY" benchmarks/tp_decode.py \
    --preset llama2-7b --tp 2 --new-tokens 200 --repeats 3 \
    --out "$OUT/tp_decode_llama2-7b_unfused.json"
  step bench_throughput_unfused 300 env SARATHI_FUSED_ALLREDUCE=0 "$PY" benchmarks/throughput.py \
    --preset llama3-8b --tp 2 --json "$OUT/throughput_llama3-8b_tp2_unfused.json"
}
part_allreduce() {
  step bench_allreduce 120 "$PY" benchmarks/allreduce.py --json "$OUT/allreduce.json"
}
for p in "${PARTS[@]}"; do
  case "$p" in
    tests | decode | throughput | allreduce | gemv | unfused) "part_$p" ;;
    *) echo "unknown part '$p' (tests, decode, throughput, allreduce, gemv, unfused)" >&2; exit 2 ;;
  esac
done

summary "tensor parallel GPU summary"
for t in pytest_gpu_tp pytest_tp_suite; do
  [ -f "$OUT/$t.log" ] && grep -hE "passed|failed|error" "$OUT/$t.log" | tail -n 1 | sed "s/^/$t: /"
done
for b in bench_tp_decode bench_tp_decode_eager bench_tp_decode_unfused; do
  [ -f "$OUT/$b.log" ] && { echo "$b:"; grep -A4 "^tp  " "$OUT/$b.log" || true; }
done
for b in bench_throughput bench_throughput_unfused; do
  [ -f "$OUT/$b.log" ] && { echo "$b:"; grep -A3 "^engine" "$OUT/$b.log" || true; }
done
exit $failed
