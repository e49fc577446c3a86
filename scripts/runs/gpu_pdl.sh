#!/usr/bin/env bash
# Recorded run for programmatic dependent launch (PDL) of the Triton kernels: the GPU tests
# of the kernels and graphs, then the batch-1 roofline cases with PDL on, off, and on with
# every one-row matmul on the GEMV (q|k|v included), all on one machine, and the per-kernel
# profile of Llama-3-8B batch 1 with PDL on.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl.sh
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
CASES="--case llama2-7b:1:512 --case llama2-7b:1:4096 --case llama3-8b:1:2048"
for cfg in "1 1" "0 1" "1 all"; do
  set -- $cfg
  TAIL=6 run "roofline_pdl$1_gemv$2" 200 env SARATHI_PDL=$1 SARATHI_GEMV=$2 \
    python3 benchmarks/roofline.py $CASES --json "$OUT/roofline_pdl$1_gemv$2.json"
done
TAIL=16 run profile_pdl1 120 python3 benchmarks/roofline.py --profile llama3-8b:1:2048 \
  --json "$OUT/profile_pdl1.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
