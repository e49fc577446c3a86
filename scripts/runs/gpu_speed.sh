#!/usr/bin/env bash
# GPU speed run: vattention extension, Triton attention tests, roofline, throughput.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_speed.sh [quick]
# Logs go to $OUT/logs.tgz; benchmark JSON to $OUT (at most 8 files come back).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-speed}"
TAIL="${TAIL:-12}"
. scripts/gpu_lib.sh
run pytest_attention 120 python3 -m pytest -q -m gpu tests/attention -x -p no:cacheprovider
run roofline 200 python3 benchmarks/roofline.py --json "$OUT/roofline.json"
run tp_qwen3 100 python3 benchmarks/throughput.py --preset qwen3-0.6b \
  --json "$OUT/throughput_qwen3.json"
run tp_llama3 130 python3 benchmarks/throughput.py --preset llama3-8b \
  --json "$OUT/throughput_llama3.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
