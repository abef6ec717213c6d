#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend (default: all three).
# Usage: tools/run_tests.sh [tensorflow|jax|torch ...] [-- extra pytest args]
#
# Each backend's run ends with its 15 slowest tests (--durations), so that
# the suite's time can be kept in check from any CI log.
# TEST_JOBS (default: the number of CPUs, at most one per backend) backends
# run at once, each in its own pytest process; most tests are small eager
# steps that keep one core busy, so two backends side by side on two cores
# take about the time of the longest one instead of the sum. Each backend's
# output is printed whole when it finishes. TEST_JOBS=1 runs them one after
# the other with live output.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
backends=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do backends+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#backends[@]} -eq 0 ] && backends=(tensorflow jax torch)
jobs="${TEST_JOBS:-$(nproc 2>/dev/null || echo 1)}"
[ "$jobs" -gt ${#backends[@]} ] && jobs=${#backends[@]}
[ "$jobs" -lt 1 ] && jobs=1
# `wait -n -p` needs bash 5.1.
if (( BASH_VERSINFO[0] < 5 || (BASH_VERSINFO[0] == 5 && BASH_VERSINFO[1] < 1) )); then jobs=1; fi
# The key check's pretraining is shared by the three sessions (see
# tests/evaluation/conftest.py); keep it with this run unless told otherwise.
logs="$(mktemp -d)"
export KERAS_CCMIM_TEST_CACHE="${KERAS_CCMIM_TEST_CACHE:-$logs/cache}"
# JAX's persistent compilation cache, for this run only: the suite builds the
# same tiny models again and again (and the kill-and-resume tests restart
# processes that compile the same step), and a cached program is read instead
# of compiled. Measured on one pretraining test: 100 s cold, 47 s warm.
# (TensorFlow's XLA cache flag wrote nothing for CPU jit_compile here.)
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$logs/jax_cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}"
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:-0}"
trap 'rm -rf "$logs"' EXIT

run_one() {  # backend -> exit status of its pytest run
  local backend=$1 start rc
  start=$(date +%s)
  KERAS_BACKEND="$backend" "$PY" -m pytest -q -W ignore::DeprecationWarning --durations=15 "${@:2}"
  rc=$?
  echo "$backend: exit $rc in $(( $(date +%s) - start )) s" > "$logs/$backend.summary"
  return $rc
}

status=0
if [ "$jobs" -eq 1 ]; then
  for backend in "${backends[@]}"; do
    echo "=== KERAS_BACKEND=$backend ==="
    run_one "$backend" "$@" || status=1
  done
else
  declare -A running=()
  report() {  # pid -> prints the finished backend's output
    local backend=${running[$1]}
    echo "=== KERAS_BACKEND=$backend ==="
    cat "$logs/$backend.log"
    unset "running[$1]"
  }
  for backend in "${backends[@]}"; do
    while [ ${#running[@]} -ge "$jobs" ]; do
      wait -n -p done_pid "${!running[@]}"
      report "$done_pid"
    done
    run_one "$backend" "$@" > "$logs/$backend.log" 2>&1 &
    running[$!]=$backend
  done
  while [ ${#running[@]} -gt 0 ]; do
    wait -n -p done_pid "${!running[@]}"
    report "$done_pid"
  done
fi
for backend in "${backends[@]}"; do
  if [ -f "$logs/$backend.summary" ]; then
    cat "$logs/$backend.summary"
    grep -q ": exit 0 in" "$logs/$backend.summary" || status=1
  else
    echo "$backend: no result"; status=1
  fi
done
exit $status
