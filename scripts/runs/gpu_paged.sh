#!/usr/bin/env bash
# GPU run for the paged baseline: kernel tests, vattention-vs-paged kernel times and
# end-to-end throughput on both caches.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_paged.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-paged}"
TAIL="${TAIL:-14}"
. scripts/gpu_lib.sh
run pytest_attention 240 python3 -m pytest -q -m gpu tests/attention -x -p no:cacheprovider
run kernels 200 python3 benchmarks/attention_kernels.py --json "$OUT/attention_kernels.json"
for preset in qwen3-0.6b llama3-8b; do
  for backend in auto paged; do
    run "tput_${preset}_${backend}" 150 python3 benchmarks/throughput.py --preset "$preset" \
      --engine-arg "attention_backend=$backend" --json "$OUT/throughput_${preset}_${backend}.json"
  done
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
