#!/usr/bin/env bash
# Map-ahead in the engine: decode idle and map-wait share while sequences cross pages.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_ahead.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || echo "build failed"
for layout in per_layer mega; do
  timeout 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 --prompt-len 1000 \
    --steps 40 --engine-arg kv_layout=$layout --json "$OUT/decode_idle_ahead_$layout.json" \
    > "$OUT/idle_$layout.log" 2>&1; echo "$layout rc=$?"; tail -n 4 "$OUT/idle_$layout.log"
done
timeout 150 python3 -m pytest -q -m gpu tests/attention tests/test_engine.py -p no:cacheprovider \
  > "$OUT/pytest.log" 2>&1; echo "pytest rc=$?"; tail -n 3 "$OUT/pytest.log"
