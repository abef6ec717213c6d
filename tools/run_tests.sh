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
# output is printed whole when it finishes (the last backend's, run in two
# halves when the whole suite runs on several cores, as two parts).
# TEST_JOBS=1 runs them one after the other with live output.
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

# Units of work: one pytest run per backend. With two or more jobs and the
# whole suite (no extra pytest arguments), the last backend's run is cut in
# two, its evaluation and scripts' tests (TEST_SPLIT_FIRST) and the rest, so
# that one half follows each of the first two backends and both cores finish
# together (measured: TensorFlow 1973 s and JAX 1845 s side by side, then
# torch 991 s after JAX, left one core idle for most of torch's run).
# TEST_ROOT and TEST_SPLIT_FIRST change what runs (tests/test_run_tests.py
# tries the scheduling on a small part of the suite).
TEST_ROOT="${TEST_ROOT:-tests}"
read -r -a split_first <<< "${TEST_SPLIT_FIRST:-tests/evaluation tests/test_benchmarks.py tests/test_gpu_run.py tests/test_segmentation_study.py}"
units=(); unit_backend=(); unit_paths=(); unit_title=()
last=$(( ${#backends[@]} - 1 ))
for i in "${!backends[@]}"; do
  backend=${backends[$i]}
  if [ "$jobs" -ge 2 ] && [ $# -eq 0 ] && [ ${#backends[@]} -ge 3 ] && [ "$i" -eq "$last" ]; then
    ignores=""
    for path in "${split_first[@]}"; do ignores+=" --ignore=$path"; done
    units+=("$backend.1" "$backend.2")
    unit_backend+=("$backend" "$backend")
    unit_paths+=("${split_first[*]}" "$TEST_ROOT$ignores")
    unit_title+=("$backend (part 1 of 2: ${split_first[*]})" "$backend (part 2 of 2: the rest)")
  else
    units+=("$backend"); unit_backend+=("$backend")
    if [ $# -eq 0 ]; then unit_paths+=("$TEST_ROOT"); else unit_paths+=(""); fi
    unit_title+=("$backend")
  fi
done

run_one() {  # unit index, extra pytest args -> exit status of its pytest run
  local i=$1 start rc
  start=$(date +%s)
  # shellcheck disable=SC2086  # the unit's paths are words
  KERAS_BACKEND="${unit_backend[$i]}" "$PY" -m pytest -q -W ignore::DeprecationWarning \
    --durations=15 ${unit_paths[$i]} "${@:2}"
  rc=$?
  echo "${units[$i]}: exit $rc in $(( $(date +%s) - start )) s" > "$logs/${units[$i]}.summary"
  return $rc
}

status=0
if [ "$jobs" -eq 1 ]; then
  for i in "${!units[@]}"; do
    echo "=== KERAS_BACKEND=${unit_title[$i]} ==="
    run_one "$i" "$@" || status=1
  done
else
  declare -A running=()
  report() {  # pid -> prints the finished unit's output
    local i=${running[$1]}
    echo "=== KERAS_BACKEND=${unit_title[$i]} ==="
    cat "$logs/${units[$i]}.log"
    unset "running[$1]"
  }
  for i in "${!units[@]}"; do
    while [ ${#running[@]} -ge "$jobs" ]; do
      wait -n -p done_pid "${!running[@]}"
      report "$done_pid"
    done
    run_one "$i" "$@" > "$logs/${units[$i]}.log" 2>&1 &
    running[$!]=$i
  done
  while [ ${#running[@]} -gt 0 ]; do
    wait -n -p done_pid "${!running[@]}"
    report "$done_pid"
  done
fi
for unit in "${units[@]}"; do
  if [ -f "$logs/$unit.summary" ]; then
    cat "$logs/$unit.summary"
    grep -q ": exit 0 in" "$logs/$unit.summary" || status=1
  else
    echo "$unit: no result"; status=1
  fi
done
exit $status
