#!/usr/bin/env bash
# GPU run to decide the --overlap-scheduling default: GPU tests with it on, then decode idle
# time and end-to-end throughput with it on and off, alternating (host noise is +-15% between
# single runs, so each pair runs twice).
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_overlap.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-overlap}"
TAIL="${TAIL:-3}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
run pytest_attention 200 python3 -m pytest -q -m gpu tests/attention -x -p no:cacheprovider
for round in 1 2; do
  for o in 1 0; do
    run "idle_llama3_overlap${o}_r$round" 100 python3 benchmarks/decode_idle.py \
      --preset llama3-8b --batch 64 --engine-arg "overlap_scheduling=$o" \
      --json "$OUT/idle_llama3_overlap${o}_r$round.json"
  done
done
for o in 1 0; do
  run "tput_qwen3_overlap$o" 120 python3 benchmarks/throughput.py --preset qwen3-0.6b \
    --engine-arg "overlap_scheduling=$o" --json "$OUT/throughput_qwen3_overlap$o.json"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
