#!/usr/bin/env bash
# Recorded run: vattention vs paged attention kernels with PDL on (the default) and off, then
# the GPU tests of the kernels and the batch-1 / batch-16 roofline cases. At fc171ce it ran
# only the kernels (decode with PDL at every grid size); since then the decode kernel uses
# PDL only where its grid fits the 2x-fill plan.
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
TAIL=4 run pytest_gpu 240 python3 -m pytest -m gpu tests/test_fused_layers.py tests/attention \
  -p no:cacheprovider
TAIL=9 run roofline 200 python3 benchmarks/roofline.py --case llama2-7b:1:512 \
  --case llama2-7b:1:4096 --case llama3-8b:1:2048 --case llama3-8b:16:2048 \
  --case llama3-8b:64:2048 --json "$OUT/roofline.json"
