#!/usr/bin/env bash
# Fused layers + graphs: GPU tests, roofline with and without the fused kernels (same
# machine), decode idle time, end-to-end throughput.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_final.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-final}"
TAIL="${TAIL:-4}"
. scripts/gpu_lib.sh
run pytest_gpu 120 python3 -m pytest -q -m gpu tests/attention tests/test_fused_layers.py \
  -p no:cacheprovider
TAIL=16 run roofline_unfused 120 env SARATHI_FUSED=0 python3 benchmarks/roofline.py \
  --json "$OUT/roofline_unfused.json"
TAIL=16 run roofline_fused 120 python3 benchmarks/roofline.py --json "$OUT/roofline_fused.json"
run idle 90 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --json "$OUT/decode_idle_fused.json"
run tp_qwen3 100 python3 benchmarks/throughput.py --preset qwen3-0.6b \
  --json "$OUT/throughput_qwen3_fused.json"
run tp_llama3 110 python3 benchmarks/throughput.py --preset llama3-8b \
  --json "$OUT/throughput_llama3_fused.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
