#!/usr/bin/env bash
# Recorded run, end to end with programmatic dependent launch (PDL): every GPU test, GPU idle
# time between decode steps at batch 64 (three runs with the defaults, one with overlapped
# scheduling off), and throughput on both presets with PDL on (the default) and off, all on
# one machine.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_pdl_e2e.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-pdl-e2e}"
TAIL="${TAIL:-4}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
TAIL=30 run pytest_gpu 240 python3 -m pytest -m gpu -rs --ignore=tests/server tests \
  -p no:cacheprovider || { tar czf "$OUT/logs.tgz" -C "$OUT" logs; exit 1; }
idle=()
for r in 1 2 3; do
  run "idle_r$r" 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
    --json "$OUT/idle_r$r.json"
  idle+=("$OUT/idle_r$r.json")
done
run idle_no_overlap 100 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --engine-arg overlap_scheduling=0 --json "$OUT/idle_no_overlap.json"
# Eight files at most come back from the device: the idle runs go in one JSON.
python3 - "$OUT/idle.json" "${idle[@]}" "$OUT/idle_no_overlap.json" <<'PY'
import json, sys
json.dump([json.load(open(p)) for p in sys.argv[2:]], open(sys.argv[1], "w"), indent=1)
PY
rm -f "${idle[@]}" "$OUT/idle_no_overlap.json"
for p in qwen3-0.6b llama3-8b; do
  for pdl in 1 0; do
    run "tput_${p}_pdl$pdl" 200 env SARATHI_PDL=$pdl python3 benchmarks/throughput.py \
      --preset "$p" --json "$OUT/tput_${p}_pdl$pdl.json"
  done
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
