#!/usr/bin/env bash
# Recorded run for programmatic dependent launch (PDL): the GPU tests of the kernels, graphs
# and caches, then on one machine the full roofline with PDL on (the default) and off, the
# per-kernel profile of Llama-3-8B batch 1, and GPU idle time between decode steps at batch
# 64, three times.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl.sh
# (At 70fce5c this script timed only the three batch-1 cases, PDL on / off / on with
# SARATHI_GEMV=all: benchmarks/results/roofline_h100_70fce5c_*.json.)
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-pdl}"
TAIL="${TAIL:-4}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
python3 -c "import triton, torch; from sarathi.model_executor import pdl; \
print('triton', triton.__version__, 'pdl', pdl.enabled(torch.zeros(1, device='cuda')))"
TAIL=15 run pytest_gpu 300 python3 -m pytest -m gpu -rs tests/test_fused_layers.py \
  tests/attention tests/vattention -p no:cacheprovider || {
  tar czf "$OUT/logs.tgz" -C "$OUT" logs; exit 1; }
for p in 1 0; do
  TAIL=10 run "roofline_pdl$p" 200 env SARATHI_PDL=$p python3 benchmarks/roofline.py \
    --json "$OUT/roofline_pdl$p.json"
done
TAIL=16 run profile 120 python3 benchmarks/roofline.py --profile llama3-8b:1:2048 \
  --json "$OUT/profile.json"
for r in 1 2 3; do
  TAIL=3 run "idle_r$r" 120 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
    --json "$OUT/idle_r$r.json"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
