#!/usr/bin/env bash
# Every GPU-marked test, on a machine with CUDA: builds the vattention extension in place,
# then runs `pytest -m gpu` (vattention, attention kernels, CUDA graphs, fused layers, and the
# tensor-parallel tests where two GPUs are visible). Logs to $OUT/gpu_tests.log.
#
#   OUT=/some/dir bash scripts/gpu_tests.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out-gpu-tests}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
"$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log"; exit 1; }
# The server, client and offline-chat tests hold no GPU tests and import the server (fastapi,
# uvicorn, pydantic), which GPU images may lack.
"$PY" -m pytest -m gpu -rs -p no:cacheprovider --ignore=tests/server --ignore=tests/clients \
  --ignore=tests/test_offline_chat.py tests 2>&1 | tee "$OUT/gpu_tests.log"
