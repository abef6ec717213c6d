#!/usr/bin/env bash
# Runs the whole test suite once per Keras backend (default: all three).
# Usage: tools/run_tests.sh [tensorflow|jax|torch ...] [-- extra pytest args]
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
backends=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do backends+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#backends[@]} -eq 0 ] && backends=(tensorflow jax torch)
status=0
summary=()
for backend in "${backends[@]}"; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  KERAS_BACKEND="$backend" "$PY" -m pytest -q -W ignore::DeprecationWarning "$@"
  rc=$?
  summary+=("$backend: exit $rc in $(( $(date +%s) - start )) s")
  [ $rc -ne 0 ] && status=1
done
printf '%s\n' "${summary[@]}"
exit $status
