#!/usr/bin/env bash
# First GPU contact: vattention build + tests + benchmarks, then an engine smoke test
# (demo model, torch attention) and a first Qwen3-0.6B throughput number.
#   OUT=/dir bash scripts/runs/gpu_smoke.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-smoke}"
LOGS="$OUT/logs"
mkdir -p "$LOGS"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1 PYTHON=python3
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
OUT="$LOGS" bash scripts/gpu_vattention.sh > "$LOGS/vattention_all.log" 2>&1
echo "vattention script rc=$?"
tail -n 15 "$LOGS/vattention_all.log"
timeout 120 python3 -m sarathi generate --prompt hi --max-tokens 8 > "$LOGS/generate.log" 2>&1
echo "generate rc=$?"; tail -n 8 "$LOGS/generate.log"
timeout 240 python3 benchmarks/throughput.py --preset qwen3-0.6b --num-requests 32 \
  --json "$OUT/throughput_qwen3_smoke.json" > "$LOGS/throughput.log" 2>&1
echo "throughput rc=$?"; tail -n 8 "$LOGS/throughput.log"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
cp "$OUT"/logs.tgz /dev/null
