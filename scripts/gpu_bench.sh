#!/usr/bin/env bash
# The GPU benchmark runs recorded in benchmarks/results/, by group: one command per group name.
#
#   BENCH_COMMIT=<sha> OUT=/dir scripts/gpu_bench.sh [options] GROUP...
#   scripts/gpu_bench.sh --help          (the groups and options)
#
# Run it from a copy of the repository on a machine with CUDA. It builds the vattention
# extension in place (scripts/gpu_lib.sh), then runs each group's benchmarks in the order
# named (`tests` always first: a benchmark of kernels that fail their tests is worth nothing,
# so a test failure stops the run unless --keep-going). Each benchmark's JSON lands in $OUT,
# its log in $OUT/logs/NAME.log, packed into $OUT/logs.tgz at the end (--keep-logs: left as
# files); when that leaves more than 8 files (what the device tool returns), all of $OUT is
# packed into $OUT/bench.tgz. The exit status is non-zero if any step failed; a summary table closes the output.
#
# BENCH_COMMIT names the commit in every JSON's `info` (the device copy's .git may be absent
# or stale). SARATHI_* switches in the environment (SARATHI_PDL=0, SARATHI_GEMV=0|1|all,
# SARATHI_FUSED=0, SARATHI_OVERLAP=0) reach every benchmark and are recorded in its `info.command`;
# --sweep runs the named groups once per value of one such switch, on the same machine.
#
# The scripts/runs/*.sh of earlier write-ups (in git history) map onto groups: gpu_pdl.sh =
# `--sweep SARATHI_PDL=1,0 roofline` + `profile idle`; gpu_batch1.sh = `--sweep
# SARATHI_GEMV=1,0 roofline` + `tests idle overlap throughput`; gpu_final.sh = `--sweep
# SARATHI_FUSED=0,1 roofline`; gpu_pdl_e2e.sh = `tests idle overlap` + `--sweep SARATHI_PDL=1,0
# throughput`; gpu_pdl_attention.sh = `--sweep SARATHI_PDL=1,0 attention`; gpu_pdl_final.sh =
# `tests roofline attention`; gpu_pdl_confirm.sh = `idle throughput`; gpu_paged.sh = `attention
# paged`; gpu_kernels.sh = `--old-tree DIR throughput` + `attention`; gpu_floor.sh =
# `attention scheduling` + `--presets qwen3-0.6b hf`; gpu_overlap.sh = `overlap`; gpu_ahead.sh
# = `mapahead`; gpu_domain.sh = `domain`; gpu_profile.sh = `roofline idle hostprof`;
# gpu_graphs.sh = `idle throughput` + `--arg roofline=--prefill-only roofline`; gpu_speed.sh =
# `roofline throughput`; gpu_smoke.sh = `vattention smoke`.
set -u -o pipefail
cd "$(dirname "$0")/.."

GROUPS_HELP="\
  tests       every gpu-marked test: pytest -m gpu tests, without the server, client and
              offline-chat modules (they import the server) (~5 min)
  roofline    benchmarks/roofline.py: copy bandwidth and bf16 matmul ceilings, graphed decode
              (Llama-2-7B b1 ctx 512/4096, Llama-3-8B b1/16/64/128 ctx 2048), Llama-3-8B
              prefill; roofline.json
  profile     roofline.py --profile llama3-8b:1:2048: GPU time per kernel of the graphed step
  attention   benchmarks/attention_kernels.py: vattention vs paged decode/prefill kernels,
              1K-16K; attention_kernels.json
  idle        benchmarks/decode_idle.py, Llama-3-8B batch 64, --repeats times (3): GPU idle
              between engine decode steps; decode_idle.json (one list)
  overlap     overlapped scheduling on vs off, alternating: decode_idle (--repeats rounds) and
              throughput per preset; decode_idle_overlap.json, throughput_PRESET_overlap{1,0}.json
  steps       decode_idle.py per preset: decode steps at batch 64 and 256 and mixed steps
              (a prefill chunk filling the budget + 64 decodes) against their floor, and GPU
              idle between them; engine_steps.json
  mapahead    decode_idle --prompt-len 1000 --steps 40, kv_layout per_layer and mega: idle and
              map-wait share while every sequence crosses a page; decode_idle_mapahead.json
  throughput  benchmarks/throughput.py, nano-vllm workload, per preset; throughput_PRESET.json
              (with --old-tree DIR, that tree's throughput first, same machine)
  hf          throughput.py --baseline hf --hf-batch 64: against transformers generate, per
              preset (~4-6 min each); throughput_PRESET_vs_hf.json
  paged       throughput per preset on the vattention (attention_backend=auto) and the paged
              cache; throughput_PRESET_{auto,paged}.json
  scheduling  benchmarks/scheduling.py --preset llama3-8b --num-requests 128, Sarathi vs vLLM
              policy, per --rates value (4 12); scheduling_llama3-8b_rateR.json
  domain      benchmarks/domain_serving.py: Llama-2-7B shape served with the base and a 10k-swap
              AdaptiVocab tokenizer, vattention and paged (~5 min; needs ASSETS, see below)
  quality     benchmarks/adaptivocab_quality.py --preset gpu: bits per byte of a patched model
              (pretraining + 700 fine-tune steps, ~7 min; needs ASSETS);
              adaptivocab_quality-gpu.json
  structured  benchmarks/structured_outputs.py --preset llama3-8b: grammar masks at batch 64
              (host time per step, mistral-7b vocabulary from ASSETS when there), step time
              constrained vs not, overlap on and off; structured_outputs.json
  prefix      benchmarks/prefix_caching.py --preset llama3-8b: prefix caching off vs on, shared
              system prompt (256 x 2000-token prefix; per_layer, mega, paged) and multi-turn chat
              (64 x 8 turns; mega, paged); prefix_caching_{shared,multiturn}.json
  configs     launch shapes of the attention kernels: benchmarks/decode_configs.py (batch 64/256,
              context 600/2048) and prefill_configs.py (--arg configs="ARGS" reaches the
              prefill sweep); decode_configs.json, prefill_configs.json
  smallm      benchmarks/small_m_linear.py --rows 1, Llama-3-8B and Llama-2-7B shapes: one-row
              matmuls, cuBLAS vs the split-K GEMV
  hostprof    cProfile of throughput.py --preset qwen3-0.6b --num-requests 64 (host time);
              hostprof_top.txt
  streaming   benchmarks/stream_overhead.py per preset, 64 and 256 streams of 128 tokens: the
              server's event-loop CPU per streamed chunk and streamed vs unstreamed wall time
              (needs the server's packages: installed, or wheels in .carry/whl);
              stream_overhead_PRESET.json
  smoke       python3 -m sarathi generate (demo model) and a 32-request Qwen3-0.6B throughput
  vattention  scripts/gpu_vattention.sh into \$OUT/vattention: extension build, vattention GPU
              tests, mapping and fragmentation benchmarks
  tp          scripts/gpu_tp.sh into \$OUT/tp (two GPUs): NCCL check, TP tests, batch-1
              decode and workload TP=2 vs TP=1, all-reduce latency (~9 min: or call
              gpu_tp.sh with its parts over several device calls)"

usage() {
  cat <<EOF
usage: [BENCH_COMMIT=<sha>] [OUT=dir] scripts/gpu_bench.sh [options] GROUP...

groups:
$GROUPS_HELP

options:
  --commit SHA         set BENCH_COMMIT (the commit recorded in every JSON)
  --presets "P ..."    model shapes for throughput/hf/paged/overlap (default: qwen3-0.6b llama3-8b)
  --repeats N          idle runs, overlap rounds (default 3)
  --rates "R ..."      scheduling arrival rates in requests/s (default: 4 12)
  --engine-arg K=V     passed to every throughput.py and decode_idle.py command (repeatable)
  --arg GROUP=ARGS     extra arguments for that group's benchmark commands (repeatable), e.g.
                       --arg roofline="--case llama3-8b:1:2048"  --arg roofline=--prefill-only
                       --arg attention="--layouts per_layer,per_layer_odd,mega"
                       --arg quality="--finetune-steps 150"
  --sweep VAR=V1,V2    run every named group once per value of environment variable VAR (files
                       get a suffix, e.g. SARATHI_PDL=1,0 -> roofline_pdl1.json, roofline_pdl0.json)
  --old-tree DIR       throughput: also run DIR (a copy of an earlier commit's tree) first, per
                       preset, on the same machine (OLD_COMMIT names it in its JSON)
  --keep-going         do not stop when the tests fail
  --keep-logs          leave \$OUT/logs as files instead of packing them into logs.tgz
  --dry-run            print the commands instead of running them (no build, no GPU)
  -h, --help           this text

environment: OUT (default ./out-bench), BENCH_COMMIT, SARATHI_PDL / SARATHI_GEMV / SARATHI_FUSED
(engine switches, passed through), ASSETS (folder with tokenizers/mistral-7b and corpora/, for
domain and quality; default .carry), domain knobs NUM_REQUESTS (200), RATE (inf), BACKENDS
(vattention,paged), PATCH (a prebuilt patch tokenizer folder), PYTHONPATH (kept behind the
tree: the engine imports llguidance and sortedcontainers, which a bare device image may lack;
unpack their wheels into a folder and name it here, e.g. pip install --no-deps --target
/tmp/site llguidance-*.whl sortedcontainers-*.whl).

examples:
  BENCH_COMMIT=\$(git rev-parse --short HEAD) scripts/gpu_bench.sh tests roofline idle throughput
  scripts/gpu_bench.sh --sweep SARATHI_PDL=1,0 roofline attention
  scripts/gpu_bench.sh --sweep SARATHI_GEMV=1,0 --arg roofline="--case llama3-8b:1:2048" roofline
EOF
}

ALL_GROUPS="tests roofline profile attention idle overlap steps mapahead throughput hf paged
scheduling domain quality structured prefix configs smallm hostprof streaming smoke vattention tp"
PRESETS="qwen3-0.6b llama3-8b"
REPEATS=3
RATES="4 12"
ENGINE_ARGS=()
declare -A EXTRA=()
SWEEP_VAR="" SWEEP_VALUES=""
OLD_TREE="${OLD_TREE:-}"
KEEP_GOING=0 KEEP_LOGS=0 DRY=0
SELECTED=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --commit) export BENCH_COMMIT="$2"; shift 2 ;;
    --presets) PRESETS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --rates) RATES="$2"; shift 2 ;;
    --engine-arg) ENGINE_ARGS+=(--engine-arg "$2"); shift 2 ;;
    --arg)
      case "$2" in *=*) ;; *) echo "--arg wants GROUP=ARGS, got '$2'" >&2; exit 2 ;; esac
      case " $(echo $ALL_GROUPS) " in *" ${2%%=*} "*) ;;
        *) echo "--arg: unknown group '${2%%=*}'" >&2; exit 2 ;; esac
      EXTRA[${2%%=*}]="${EXTRA[${2%%=*}]:-} ${2#*=}"; shift 2 ;;
    --sweep)
      case "$2" in *=*,*) ;; *) echo "--sweep wants VAR=V1,V2[,...], got '$2'" >&2; exit 2 ;; esac
      SWEEP_VAR="${2%%=*}"; SWEEP_VALUES="${2#*=}"; shift 2 ;;
    --old-tree) OLD_TREE="$2"; shift 2 ;;
    --keep-going) KEEP_GOING=1; shift ;;
    --keep-logs) KEEP_LOGS=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      case " $(echo $ALL_GROUPS) " in *" $1 "*) SELECTED+=("$1") ;;
        *) echo "unknown group '$1'; groups: $(echo $ALL_GROUPS)" >&2; exit 2 ;;
      esac
      shift ;;
  esac
done
[ ${#SELECTED[@]} -gt 0 ] || { usage; exit 2; }

OUT="${OUT:-$PWD/out-bench}"
mkdir -p "$OUT"
ASSETS="${ASSETS:-.carry}"
export TQDM_DISABLE=True NCCL_NVLS_ENABLE=0
[ -n "${BENCH_COMMIT:-}" ] ||
  echo "warning: BENCH_COMMIT is not set; the JSONs take the commit from this copy's .git"

declare -a NAMES=() CODES=() TIMES=()
if [ "$DRY" = 1 ]; then
  LOGS="$OUT/logs"
  run() {
    local name="$1" limit="$2"; shift 2
    echo "[$name, ${limit}s] ${SWEEP_VAR:+$SWEEP_VAR=${!SWEEP_VAR} }$*"
  }
else
  # PYTHONPATH, $LOGS, the vattention extension build, run NAME TIMEOUT CMD...
  . scripts/gpu_lib.sh
fi
step() {  # step NAME TIMEOUT CMD...: run, and keep the exit code and time for the summary
  local t0=$SECONDS rc
  run "$@"; rc=$?
  NAMES+=("$1"); CODES+=("$rc"); TIMES+=("$((SECONDS - t0))")
  return $rc
}
merge_json() {  # merge_json OUT_FILE PART...: the parts as one JSON list, parts removed
  [ "$DRY" = 1 ] && { echo "[merge] $* -> $1"; return 0; }
  local dest="$1"; shift
  python3 - "$dest" "$@" <<'PY'
import json, os, sys
parts = [p for p in sys.argv[2:] if os.path.exists(p)]
json.dump([json.load(open(p)) for p in parts], open(sys.argv[1], "w"), indent=1)
for p in parts:
    os.remove(p)
PY
}
extra() { echo "${EXTRA[$1]:-}"; }  # unquoted at use: split into words on purpose

# ---- the groups; $S is the file suffix of the current --sweep value ("" without one) ----
g_tests() {  # --arg tests="PATHS" narrows the run to those paths
  local paths
  paths="$(extra tests)"
  TAIL=30 step "tests$S" 600 python3 -m pytest -m gpu -rs --ignore=tests/server --ignore=tests/clients \
    --ignore=tests/test_offline_chat.py \
    -p no:cacheprovider ${paths:-tests}
}
g_roofline() {
  TAIL=16 step "roofline$S" 400 python3 benchmarks/roofline.py $(extra roofline) \
    --json "$OUT/roofline$S.json"
}
g_profile() {
  TAIL=20 step "profile$S" 300 python3 benchmarks/roofline.py --profile llama3-8b:1:2048 \
    $(extra profile) --json "$OUT/roofline_profile$S.json"
}
g_attention() {
  TAIL=12 step "attention$S" 300 python3 benchmarks/attention_kernels.py $(extra attention) \
    --json "$OUT/attention_kernels$S.json"
}
idle_run() {  # idle_run NAME PRESET JSON ARGS...
  local name="$1" preset="$2" json="$3"; shift 3
  TAIL=3 step "$name" 150 python3 benchmarks/decode_idle.py --preset "$preset" --batch 64 \
    "${ENGINE_ARGS[@]}" $(extra "$G") "$@" --json "$json"
}
throughput_run() {  # throughput_run NAME PRESET JSON ARGS...
  local name="$1" preset="$2" json="$3"; shift 3
  TAIL=4 step "$name" 300 python3 benchmarks/throughput.py --preset "$preset" \
    "${ENGINE_ARGS[@]}" $(extra "$G") "$@" --json "$json"
}
g_idle() {
  local parts=() r
  for r in $(seq "$REPEATS"); do
    idle_run "idle$S-r$r" llama3-8b "$OUT/idle$S-r$r.json"
    parts+=("$OUT/idle$S-r$r.json")
  done
  merge_json "$OUT/decode_idle$S.json" "${parts[@]}"
}
g_overlap() {
  local parts=() r o p
  for r in $(seq "$REPEATS"); do
    for o in 1 0; do
      idle_run "overlap$o$S-r$r" llama3-8b "$OUT/overlap$o$S-r$r.json" \
        --engine-arg "overlap_scheduling=$o"
      parts+=("$OUT/overlap$o$S-r$r.json")
    done
  done
  merge_json "$OUT/decode_idle_overlap$S.json" "${parts[@]}"
  for p in $PRESETS; do
    for o in 1 0; do
      throughput_run "throughput_${p}_overlap$o$S" "$p" "$OUT/throughput_${p}_overlap$o$S.json" \
        --engine-arg "overlap_scheduling=$o"
    done
  done
}
g_steps() {  # engine steps against their floor: decodes at batch 64 and 256, mixed at 64
  local parts=() p b
  for p in $PRESETS; do
    for b in 64 256; do
      idle_run "steps_${p}_b$b$S" "$p" "$OUT/steps_${p}_b$b$S.json" --batch "$b"
      parts+=("$OUT/steps_${p}_b$b$S.json")
    done
    idle_run "steps_${p}_mixed$S" "$p" "$OUT/steps_${p}_mixed$S.json" --mixed
    parts+=("$OUT/steps_${p}_mixed$S.json")
  done
  merge_json "$OUT/engine_steps$S.json" "${parts[@]}"
}
g_mapahead() {
  local parts=() layout
  for layout in per_layer mega; do
    idle_run "mapahead_$layout$S" llama3-8b "$OUT/mapahead_$layout$S.json" --prompt-len 1000 \
      --steps 40 --engine-arg "kv_layout=$layout"
    parts+=("$OUT/mapahead_$layout$S.json")
  done
  merge_json "$OUT/decode_idle_mapahead$S.json" "${parts[@]}"
}
g_throughput() {
  local p
  if [ -n "$OLD_TREE" ] && [ "$DRY" = 0 ]; then cp vattention/_C*.so "$OLD_TREE/vattention/"; fi
  for p in $PRESETS; do
    if [ -n "$OLD_TREE" ]; then
      TAIL=4 step "throughput_${p}_old$S" 300 env PYTHONPATH="$OLD_TREE" \
        BENCH_COMMIT="${OLD_COMMIT:-old-tree}" python3 "$OLD_TREE/benchmarks/throughput.py" \
        --preset "$p" "${ENGINE_ARGS[@]}" $(extra throughput) \
        --json "$OUT/throughput_${p}_old$S.json"
    fi
    throughput_run "throughput_$p$S" "$p" "$OUT/throughput_$p$S.json"
  done
}
g_hf() {
  local p
  for p in $PRESETS; do
    TAIL=5 step "throughput_${p}_vs_hf$S" 600 python3 benchmarks/throughput.py --preset "$p" \
      --baseline hf --hf-batch 64 "${ENGINE_ARGS[@]}" $(extra hf) \
      --json "$OUT/throughput_${p}_vs_hf$S.json"
  done
}
g_paged() {
  local p b
  for p in $PRESETS; do
    for b in auto paged; do
      throughput_run "throughput_${p}_$b$S" "$p" "$OUT/throughput_${p}_$b$S.json" \
        --engine-arg "attention_backend=$b"
    done
  done
}
g_structured() {
  local tok=()
  if [ -d "$ASSETS/tokenizers/mistral-7b" ]; then tok=(--tokenizer "$ASSETS/tokenizers/mistral-7b"); fi
  TAIL=12 step "structured$S" 400 python3 benchmarks/structured_outputs.py --preset llama3-8b \
    "${tok[@]}" $(extra structured) --json "$OUT/structured_outputs$S.json"
}
g_prefix() {
  TAIL=14 step "prefix_shared$S" 560 python3 benchmarks/prefix_caching.py --preset llama3-8b \
    --workload shared $(extra prefix) --json "$OUT/prefix_caching_shared$S.json"
  TAIL=10 step "prefix_multiturn$S" 500 python3 benchmarks/prefix_caching.py --preset llama3-8b \
    --workload multiturn --layouts mega,paged $(extra prefix) \
    --json "$OUT/prefix_caching_multiturn$S.json"
}
g_scheduling() {
  local r
  for r in $RATES; do
    TAIL=8 step "scheduling_rate$r$S" 400 python3 benchmarks/scheduling.py --preset llama3-8b \
      --rate "$r" --num-requests 128 $(extra scheduling) \
      --json "$OUT/scheduling_llama3-8b_rate$r$S.json"
  done
}
server_packages() {  # the server's Python packages; if missing, from the wheels in .carry/whl
  local needs="import fastapi, uvicorn, pydantic, prometheus_client, httpx" site=/tmp/domain-site
  [ "$DRY" = 1 ] && return 0
  python3 -c "$needs" 2>/dev/null && return 0
  # --target: no system site-packages to fight (externally managed, read-only, no --user).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .carry/whl/*.whl > "$LOGS/wheels.log" 2>&1 || {
    # No usable pip: a wheel is a zip laid out for site-packages, so unpacking it works too.
    echo "pip failed (see wheels.log); unpacking the wheels instead"
    python3 -c 'import sys, zipfile
for w in sys.argv[2:]: zipfile.ZipFile(w).extractall(sys.argv[1])' "$site" .carry/whl/*.whl
  }
  export PYTHONPATH="$PYTHONPATH:$site"
  python3 -c "$needs" || { echo "the server's packages do not import"; return 1; }
}
g_domain() {
  local work=/tmp/domain-work patch=()
  server_packages || { NAMES+=("domain$S"); CODES+=(1); TIMES+=(0); return 1; }
  [ -n "${PATCH:-}" ] && patch=(--patch-tokenizer "$PATCH")
  [ "$DRY" = 1 ] || rm -rf "$work"
  TAIL=40 step "domain$S" 500 python3 benchmarks/domain_serving.py --preset llama2-7b \
    --tokenizer "$ASSETS/tokenizers/mistral-7b" --corpus "$ASSETS/corpora/linux-docs.txt.gz" \
    --num-requests "${NUM_REQUESTS:-200}" --request-rate "${RATE:-inf}" \
    --backends "${BACKENDS:-vattention,paged}" --start-timeout 150 --run-timeout 150 \
    "${patch[@]}" $(extra domain) --work-dir "$work" --json "$OUT/domain_serving_llama2-7b$S.json"
  [ "$DRY" = 1 ] || cp "$work"/server-*.log "$LOGS"/ 2>/dev/null
  return 0
}
g_streaming() {
  local p
  server_packages || { NAMES+=("streaming$S"); CODES+=(1); TIMES+=(0); return 1; }
  for p in $PRESETS; do
    TAIL=6 step "stream_overhead_$p$S" 300 python3 benchmarks/stream_overhead.py --preset "$p" \
      --streams 64 256 --tokens 128 $(extra streaming) --json "$OUT/stream_overhead_$p$S.json"
  done
}
g_quality() {
  TAIL=20 step "quality$S" 600 python3 benchmarks/adaptivocab_quality.py --preset gpu \
    --corpora "$ASSETS/corpora" --tokenizer "$ASSETS/tokenizers/mistral-7b" --out "$OUT" \
    --work /tmp/avq --quiet $(extra quality) --json "$OUT/adaptivocab_quality-gpu$S.json"
}
g_configs() {
  TAIL=50 step "decode_configs$S" 400 python3 benchmarks/decode_configs.py \
    --json "$OUT/decode_configs$S.json"
  TAIL=30 step "prefill_configs$S" 300 python3 benchmarks/prefill_configs.py $(extra configs) \
    --json "$OUT/prefill_configs$S.json"
}
g_smallm() {
  local p
  for p in llama3-8b llama2-7b; do
    TAIL=12 step "small_m_linear_$p$S" 300 python3 benchmarks/small_m_linear.py --preset "$p" \
      --rows 1 $(extra smallm) --json "$OUT/small_m_linear_$p$S.json"
  done
}
g_hostprof() {
  TAIL=4 step "hostprof$S" 300 python3 -m cProfile -o "$LOGS/hostprof$S.prof" \
    benchmarks/throughput.py --preset qwen3-0.6b --num-requests 64 "${ENGINE_ARGS[@]}" \
    $(extra hostprof)
  [ "$DRY" = 1 ] && return 0
  python3 -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(30)" \
    "$LOGS/hostprof$S.prof" > "$OUT/hostprof_top$S.txt" 2>&1
  head -n 45 "$OUT/hostprof_top$S.txt" | tail -n 35
}
g_smoke() {
  TAIL=8 step "generate$S" 180 python3 -m sarathi generate --prompt hi --max-tokens 8
  throughput_run "throughput_qwen3-0.6b_smoke$S" qwen3-0.6b \
    "$OUT/throughput_qwen3-0.6b_smoke$S.json" --num-requests 32
}
g_vattention() {
  TAIL=15 step "vattention$S" 900 env OUT="$OUT/vattention$S" PYTHON=python3 \
    bash scripts/gpu_vattention.sh
}
g_tp() {
  TAIL=15 step "tp$S" 1800 env OUT="$OUT/tp$S" PYTHON=python3 bash scripts/gpu_tp.sh
}

# ---- the run ----
finish() {
  echo
  echo "===================== gpu_bench summary ($OUT) ====================="
  printf '%-34s %-5s %s\n' step rc seconds
  local i failed=0
  for i in "${!NAMES[@]}"; do
    [ "${CODES[$i]}" = 0 ] || failed=1
    printf '%-34s %-5s %s\n' "${NAMES[$i]}" "${CODES[$i]}" "${TIMES[$i]}"
  done
  if [ "$DRY" = 0 ] && [ "$KEEP_LOGS" = 0 ] && [ -d "$LOGS" ]; then
    tar czf "$OUT/logs.tgz" -C "$(dirname "$LOGS")" "$(basename "$LOGS")" && rm -rf "$LOGS"
  fi
  # The device tool returns at most 8 files from $OUT: more than that travel as one archive.
  if [ "$DRY" = 0 ] && [ "$KEEP_LOGS" = 0 ] && [ "$(find "$OUT" -type f | wc -l)" -gt 8 ]; then
    local packed
    packed="$(mktemp -d)/bench.tgz"
    tar czf "$packed" -C "$OUT" . && find "$OUT" -mindepth 1 -delete && mv "$packed" "$OUT/"
    echo "more than 8 files: packed into $OUT/bench.tgz"
  fi
  exit "$failed"
}

echo "gpu_bench: groups ${SELECTED[*]}; OUT=$OUT; BENCH_COMMIT=${BENCH_COMMIT:-unset}" \
  "${SWEEP_VAR:+; sweep $SWEEP_VAR=$SWEEP_VALUES}"
if [ "$DRY" = 0 ]; then
  { nvidia-smi -L; env | grep -E '^SARATHI_' ; python3 -c "import torch, triton; \
from sarathi.model_executor import pdl; print('torch', torch.__version__, 'triton', \
triton.__version__, torch.cuda.get_device_name(0), 'pdl', pdl.supported(torch.device('cuda')))"
  } > "$LOGS/env.log" 2>&1
  cat "$LOGS/env.log"
fi

# tests first, then the rest in the order named (each group once).
ORDER=()
for g in "${SELECTED[@]}"; do [ "$g" = tests ] && ORDER=(tests); done
for g in "${SELECTED[@]}"; do
  case " ${ORDER[*]} " in *" $g "*) ;; *) ORDER+=("$g") ;; esac
done

IFS=, read -ra VALUES <<< "${SWEEP_VALUES:-}"
[ ${#VALUES[@]} -gt 0 ] || VALUES=("")
for G in "${ORDER[@]}"; do
  for v in "${VALUES[@]}"; do
    S=""
    if [ -n "$SWEEP_VAR" ]; then
      export "$SWEEP_VAR=$v"
      S="_$(echo "${SWEEP_VAR#SARATHI_}" | tr 'A-Z' 'a-z')$v"
    fi
    "g_$G"
    rc=$?
    if [ "$G" = tests ] && [ "$rc" != 0 ] && [ "$KEEP_GOING" = 0 ]; then
      echo "the GPU tests failed: no benchmarks run (--keep-going to run them anyway)"
      finish
    fi
  done
done
finish
