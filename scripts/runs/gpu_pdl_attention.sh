#!/usr/bin/env bash
# Recorded run: vattention vs paged attention kernels after the decode kernel's PDL change
# (first key/value block loaded before the wait), with PDL on (the default) and off.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl_attention.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-pdl-attention}"
TAIL="${TAIL:-12}"
. scripts/gpu_lib.sh
for pdl in 1 0; do
  run "attention_pdl$pdl" 240 env SARATHI_PDL=$pdl python3 benchmarks/attention_kernels.py \
    --json "$OUT/attention_kernels_pdl$pdl.json"
done
