#!/usr/bin/env bash
# GPU run: kernel times (with the odd-stride variant) and logits inside vs outside the decode
# graph. With OLD_TREE set (a copy of an earlier commit's tree), its throughput runs first on
# the same machine as a baseline for this tree's.
#   BENCH_COMMIT=<sha> OUT=/dir [OLD_TREE=dir] bash scripts/runs/gpu_kernels.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-kernels}"
TAIL="${TAIL:-14}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=1
if [ -n "${OLD_TREE:-}" ]; then
  cp vattention/_C*.so "$OLD_TREE/vattention/"
  run tput_qwen3_old 150 env PYTHONPATH="$OLD_TREE" python3 "$OLD_TREE/benchmarks/throughput.py" \
    --preset qwen3-0.6b
  run tput_qwen3_new 150 python3 benchmarks/throughput.py --preset qwen3-0.6b
fi
run kernels 200 python3 benchmarks/attention_kernels.py --layouts per_layer,per_layer_odd,mega \
  --json "$OUT/attention_kernels.json"
for preset in llama3-8b qwen3-0.6b; do
  for gl in 1 0; do
    run "idle_${preset}_logits${gl}" 120 python3 benchmarks/decode_idle.py --preset "$preset" \
      --batch 64 --engine-arg "graph_logits=$gl" --json "$OUT/idle_${preset}_logits${gl}.json"
  done
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
