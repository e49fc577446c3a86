#!/usr/bin/env bash
# CUDA-graph decode: correctness test, then throughput and idle time with graphs.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_graphs.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-graphs}"
TAIL="${TAIL:-6}"
. scripts/gpu_lib.sh
run pytest_gpu 100 python3 -m pytest -q -m gpu tests/attention -x -p no:cacheprovider
TAIL=4 run idle 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --json "$OUT/decode_idle_llama3_b64_graphs.json"
TAIL=4 run tp_qwen3 100 python3 benchmarks/throughput.py --preset qwen3-0.6b \
  --json "$OUT/throughput_qwen3_graphs.json"
TAIL=4 run tp_llama3 120 python3 benchmarks/throughput.py --preset llama3-8b \
  --json "$OUT/throughput_llama3_graphs.json"
TAIL=4 run prefill 90 python3 benchmarks/roofline.py --prefill-only --json "$OUT/roofline_prefill.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
