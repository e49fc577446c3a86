#!/usr/bin/env bash
# Tensor parallelism on a 2-GPU machine: GPU TP tests, the TP test suite on the GPUs, and the
# Llama-2-7B-shape decode benchmark (TP=2 over TP=1, mp executor: Ray is not installed there).
#
#   OUT=/some/dir bash scripts/gpu_tp.sh
#
# Every step logs to $OUT/<step>.log; a failing step does not stop the later ones. Benchmark
# JSON lands in $OUT. The exit status is non-zero if any step failed; a summary closes it.
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out-tp}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# NVLink multicast (NVLS) must stay off on these machines; NCCL uses ring/tree all-reduce.
export NCCL_NVLS_ENABLE=0
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"

STEP_TAIL=30
. scripts/gpu_steps.sh

step env 60 bash -c "nvidia-smi; nvidia-smi topo -m; env | grep -E '^NCCL_' ; $PY -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.device_count(), [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]); import torch.distributed as d; print(\"nccl\", d.is_nccl_available(), torch.cuda.nccl.version())'; git rev-parse HEAD; git status --short | head -20"
# The vattention extension (the cuda KV backend); without it the engine falls back to 'dense'.
step build 300 bash -c "$PY -c 'import vattention._C' 2>/dev/null && echo 'vattention._C already built' || $PY setup.py build_ext --inplace"
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
step nccl_allreduce 120 "$PY" "$OUT/nccl_check.py"
step pytest_gpu_tp 600 "$PY" -m pytest -m gpu tests/parallel -v -rs -p no:cacheprovider
step pytest_tp_suite 600 "$PY" -m pytest tests/parallel -v -rs -p no:cacheprovider -m "not gpu"
# Default settings (TP=1 may replay CUDA graphs, which TP>1 does not use yet), then eager
# at both sizes: the like-for-like ratio.
step bench_tp_decode 900 "$PY" benchmarks/tp_decode.py --preset llama2-7b --tp 2 1 \
  --new-tokens 200 --repeats 3 --out "$OUT/tp_decode_llama2-7b.json"
step bench_tp_decode_eager 900 "$PY" benchmarks/tp_decode.py --preset llama2-7b --tp 2 1 \
  --new-tokens 200 --repeats 3 --enforce-eager --mp-tp1 --out "$OUT/tp_decode_llama2-7b_eager.json"

summary "tensor parallel GPU summary"
for t in pytest_gpu_tp pytest_tp_suite; do
  grep -hE "passed|failed|error" "$OUT/$t.log" | tail -n 1 | sed "s/^/$t: /"
done
for b in bench_tp_decode bench_tp_decode_eager; do
  echo "$b:"; grep -A4 "^tp  " "$OUT/$b.log" || true
done
exit $failed
