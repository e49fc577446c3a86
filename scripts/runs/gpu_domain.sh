#!/usr/bin/env bash
# Domain serving on one GPU (benchmarks/domain_serving.py): the Llama-2-7B shape with random
# weights and the Mistral tokenizer, served with the base tokenizer and with a 10k-swap patch
# tokenizer built here from linux-docs, on the vattention and the paged KV cache.
#
#   BENCH_COMMIT=<sha> OUT=/dir bash scripts/runs/gpu_domain.sh      (the device run carries .carry)
#
# Reads from .carry/ (git-ignored): whl/ (fastapi, uvicorn, pydantic, ... for Python 3.12;
# installed offline when missing), tokenizers/mistral-7b/, corpora/linux-docs.txt.gz.
# Knobs: NUM_REQUESTS (200), RATE (inf), BACKENDS (vattention,paged), PATCH (a prebuilt patch
# tokenizer folder: skips the ~20 s build). Writes $OUT/domain_serving_llama2-7b.json and
# $OUT/logs.tgz (this run's log and every server's log).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/out-domain}"
TAIL="${TAIL:-40}"
. scripts/gpu_lib.sh  # PYTHONPATH, $LOGS, run NAME TIMEOUT CMD..., the vattention build

NEEDS="import fastapi, uvicorn, pydantic, prometheus_client, httpx"
SITE=/tmp/domain-site
if ! python3 -c "$NEEDS" 2>/dev/null; then
  # --target: no system site-packages to fight (externally managed, read-only, no --user).
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .carry/whl/*.whl > "$LOGS/wheels.log" 2>&1 || {
    # No usable pip: a wheel is a zip laid out for site-packages, so unpacking it works too.
    echo "pip failed (see wheels.log); unpacking the wheels instead"
    python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
      "$SITE" .carry/whl/*.whl
  }
  export PYTHONPATH="$PYTHONPATH:$SITE"
  python3 -c "$NEEDS" || { echo "the server's packages do not import; stopping"; exit 1; }
fi

PATCH_ARGS=()
[ -n "${PATCH:-}" ] && PATCH_ARGS=(--patch-tokenizer "$PATCH")
WORK=/tmp/domain-work
rm -rf "$WORK"
run domain_serving 340 python3 benchmarks/domain_serving.py --preset llama2-7b \
  --tokenizer .carry/tokenizers/mistral-7b --corpus .carry/corpora/linux-docs.txt.gz \
  --num-requests "${NUM_REQUESTS:-200}" --request-rate "${RATE:-inf}" \
  --backends "${BACKENDS:-vattention,paged}" --start-timeout 150 --run-timeout 150 \
  "${PATCH_ARGS[@]}" --work-dir "$WORK" --json "$OUT/domain_serving_llama2-7b.json"
cp "$WORK"/server-*.log "$LOGS"/ 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$LOGS"
