# Sourced by gpu_bench.sh (from the repository root, with OUT set):
# environment, the logs folder, the vattention extension build, and `run NAME TIMEOUT CMD...`,
# which logs CMD to $LOGS/NAME.log, prints its exit code, time and the log's last $TAIL lines,
# and returns CMD's exit code.
# The caller's PYTHONPATH stays behind the tree: packages the image lacks (llguidance,
# sortedcontainers, the server's) may have been unpacked into a folder of its own.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOGS="${LOGS:-$OUT/logs}"
mkdir -p "$LOGS"
run() {  # run NAME TIMEOUT CMD...
  local name="$1" limit="$2"; shift 2
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc $((SECONDS - t0))s"; tail -n "${TAIL:-8}" "$LOGS/$name.log"
  return $rc
}
python3 setup.py build_ext --inplace > "$LOGS/build.log" 2>&1 || echo "build failed"
