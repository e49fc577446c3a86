#!/usr/bin/env bash
# vattention on a GPU machine: build the extension, run the GPU tests, run the benchmarks.
#
#   OUT=/some/dir bash scripts/gpu_vattention.sh
#
# Every step logs to $OUT/<step>.log; a failing step does not stop the later ones (so one
# device run gives the whole picture). Benchmark JSON lands in $OUT. The exit status is
# non-zero if any step failed; a summary table closes the output.
set -u -o pipefail
set -x

cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out-vattention}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

STEP_TAIL=40
. scripts/gpu_steps.sh

step env 60 bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'; command -v nvcc && nvcc --version; git rev-parse HEAD; git status --short | head -20"
# A clean in-place build: stale objects from another toolkit must not leak in.
rm -f vattention/_C*.so
step build 300 "$PY" setup.py build_ext --inplace --force
step import 60 "$PY" -c "import vattention, vattention._C as c; print(c.__file__); print(vattention.available_backends())"
step pytest_gpu 420 "$PY" -m pytest -m gpu tests/vattention -v -rs -p no:cacheprovider
step pytest_cpu 180 "$PY" -m pytest tests/vattention -q -rs -p no:cacheprovider -m "not gpu"
step bench_mapping 300 "$PY" benchmarks/vattention_mapping.py --backend cuda --steps 500 \
  --out "$OUT/vattention_mapping.json"
step bench_fragmentation 180 "$PY" benchmarks/vattention_fragmentation.py --backend cuda \
  --out "$OUT/vattention_fragmentation.json"

set +x
summary "vattention GPU summary"
grep -hE "passed|failed|error" "$OUT/pytest_gpu.log" | tail -n 1 | sed 's/^/pytest -m gpu: /'
exit $failed
