#!/usr/bin/env bash
# Recorded run for the batch-1 fusions (residual add + RMSNorm, rotary + K/V write), the
# split-K GEMV and overlapped scheduling on by default: every GPU test, the roofline with
# and without the GEMV (same machine), decode idle time (default vs overlap off) and
# end-to-end throughput on both presets.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_batch1.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-batch1}"
TAIL="${TAIL:-4}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
# Benchmarks of kernels that fail their tests would be worth nothing: stop there.
TAIL=30 run pytest_gpu 240 python3 -m pytest -m gpu -rs --ignore=tests/server tests \
  -p no:cacheprovider || { tar czf "$OUT/logs.tgz" -C "$OUT" logs; exit 1; }
for g in 1 0; do
  TAIL=10 run "roofline_gemv$g" 200 env SARATHI_GEMV=$g python3 benchmarks/roofline.py \
    --json "$OUT/roofline_gemv$g.json"
done
run idle_default 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --json "$OUT/idle_default.json"
run idle_no_overlap 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --engine-arg overlap_scheduling=0 --json "$OUT/idle_no_overlap.json"
for p in qwen3-0.6b llama3-8b; do
  run "tput_$p" 200 python3 benchmarks/throughput.py --preset "$p" --json "$OUT/tput_$p.json"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
