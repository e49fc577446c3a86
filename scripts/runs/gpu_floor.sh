#!/usr/bin/env bash
# GPU run: attention kernel times, this tree against an earlier one on the same machine
# (OLD_TREE: a copy of that commit's tree), the transformers floor on the Qwen3-0.6B shape,
# and Sarathi vs vLLM scheduling past saturation.
#   BENCH_COMMIT=<sha> OUT=/dir [OLD_TREE=dir] bash scripts/runs/gpu_floor.sh
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-floor}"
TAIL="${TAIL:-14}"
. scripts/gpu_lib.sh
export TQDM_DISABLE=True
run pytest_reuse 120 python3 -m pytest -q -m gpu tests/attention/test_triton_attention.py -x \
  -k "others_closed" -p no:cacheprovider
run kernels 200 python3 benchmarks/attention_kernels.py --layouts per_layer,per_layer_odd,mega \
  --json "$OUT/attention_kernels.json"
if [ -n "${OLD_TREE:-}" ]; then
  cp vattention/_C*.so "$OLD_TREE/vattention/"
  for tree in old new; do
    if [ "$tree" = old ]; then dir="$OLD_TREE"; else dir="$PWD"; fi
    run "tput_qwen3_$tree" 150 env PYTHONPATH="$dir" python3 "$dir/benchmarks/throughput.py" \
      --preset qwen3-0.6b
  done
fi
run hf_qwen3 330 python3 benchmarks/throughput.py --preset qwen3-0.6b --baseline hf \
  --hf-batch 64 --json "$OUT/throughput_qwen3_hf.json"
run sched 240 python3 benchmarks/scheduling.py --preset llama3-8b --rate 12 --num-requests 128 \
  --json "$OUT/scheduling_llama3_rate12.json"
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
