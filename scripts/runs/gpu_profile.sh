#!/usr/bin/env bash
# Roofline, decode idle time and a CPU profile of the engine on GPU.
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_profile.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-profile}"
TAIL="${TAIL:-14}"
. scripts/gpu_lib.sh
run roofline 220 python3 benchmarks/roofline.py --json "$OUT/roofline.json"
TAIL=4 run idle 120 python3 benchmarks/decode_idle.py --preset llama3-8b --batch 64 \
  --json "$OUT/decode_idle_llama3_b64.json"
run profile 120 python3 -m cProfile -o "$LOGS/tp.prof" benchmarks/throughput.py \
  --preset qwen3-0.6b --num-requests 64
python3 -c "import pstats; pstats.Stats('$LOGS/tp.prof').sort_stats('tottime').print_stats(30)" \
  > "$LOGS/profile_top.txt" 2>&1; head -c 5000 "$LOGS/profile_top.txt" | tail -c 3500
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
