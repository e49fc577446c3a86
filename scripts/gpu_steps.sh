# Shared by gpu_vattention.sh and gpu_tp.sh (source it with OUT set): `step NAME TIMEOUT_S
# CMD...` logs CMD to $OUT/NAME.log and records its exit code and time (a failing step does
# not stop the later ones); `summary TITLE` prints the table and sets $failed.
declare -a NAMES=() CODES=() SECONDS_TAKEN=()

step() {  # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"
  shift 2
  local start=$SECONDS
  echo "=== $name: $*" | tee "$OUT/$name.log"
  timeout --signal=TERM --kill-after=30 "$limit" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${STEP_TAIL:-30}" "$OUT/$name.log"
  NAMES+=("$name")
  CODES+=("$rc")
  SECONDS_TAKEN+=("$((SECONDS - start))")
}

summary() {  # summary TITLE
  echo
  echo "===================== $1 ($OUT) ====================="
  printf '%-22s %-6s %-8s %s\n' step rc seconds log
  failed=0
  local i status
  for i in "${!NAMES[@]}"; do
    status="${CODES[$i]}"
    [ "$status" = 0 ] || failed=1
    printf '%-22s %-6s %-8s %s\n' "${NAMES[$i]}" "$status" "${SECONDS_TAKEN[$i]}" \
      "$OUT/${NAMES[$i]}.log"
  done
}
