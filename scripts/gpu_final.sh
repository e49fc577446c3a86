#!/usr/bin/env bash
# Fused layers + graphs: GPU tests, roofline with and without the fused kernels (same
# machine), decode idle time, end-to-end throughput.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/gpu_final.sh
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out-final}"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
run() {  # run NAME TIMEOUT CMD...
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  echo "== $name rc=$? $((SECONDS - t0))s"; tail -n "${TAIL:-4}" "$LOGS/$name.log"
}
python3 setup.py build_ext --inplace > "$LOGS/build.log" 2>&1 || echo "build failed"
run pytest_gpu 120 python3 -m pytest -q -m gpu tests/attention tests/test_fused_layers.py \
  -p no:cacheprovider
TAIL=16 run roofline_unfused 120 env SARATHI_FUSED=0 python3 benchmarks/roofline.py \
  --json "$OUT/roofline_unfused.json"
TAIL=16 run roofline_fused 120 python3 benchmarks/roofline.py --json "$OUT/roofline_fused.json"
run idle 90 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --json "$OUT/decode_idle_fused.json"
run tp_qwen3 100 python3 benchmarks/throughput.py --preset qwen3-0.6b \
  --json "$OUT/throughput_qwen3_fused.json"
run tp_llama3 110 python3 benchmarks/throughput.py --preset llama3-8b \
  --json "$OUT/throughput_llama3_fused.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
