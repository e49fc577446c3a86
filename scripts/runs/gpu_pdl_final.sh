#!/usr/bin/env bash
# Recorded run of the final PDL rule (decode attention with PDL at batch 1 only): the GPU
# tests of the kernels and graphs, the full roofline, and the vattention vs paged kernels.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl_final.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-pdl-final}"
TAIL="${TAIL:-12}"
. scripts/gpu_lib.sh
TAIL=4 run pytest_gpu 240 python3 -m pytest -m gpu tests/test_fused_layers.py tests/attention \
  -p no:cacheprovider || exit 1
run roofline 200 python3 benchmarks/roofline.py --json "$OUT/roofline.json"
run attention 120 python3 benchmarks/attention_kernels.py --json "$OUT/attention_kernels.json"
