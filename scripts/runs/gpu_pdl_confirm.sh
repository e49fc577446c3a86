#!/usr/bin/env bash
# Recorded run at the final PDL rule: GPU idle between decode steps at batch 64 (three runs)
# and end-to-end throughput on both presets, with the defaults.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl_confirm.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-pdl-confirm}"
TAIL="${TAIL:-3}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
for r in 1 2 3; do
  run "idle_r$r" 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
    --json "$OUT/idle_r$r.json"
done
for p in qwen3-0.6b llama3-8b; do
  run "tput_$p" 150 python3 benchmarks/throughput.py --preset "$p" --json "$OUT/tput_$p.json"
done
