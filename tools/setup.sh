#!/usr/bin/env bash
# Creates .venv in the repository root with keras-ccmim and the Keras backends
# asked for (CPU builds), ready for the tests and the demo.
#
# Usage: tools/setup.sh [tensorflow] [jax] [torch]     (default: all three)
#
# TensorFlow is always installed: the tf.data input pipelines and TFDS need
# it whatever the backend. The tests run on the backends installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(tensorflow jax torch)
extras="test,plots"
for backend in "${backends[@]}"; do
  case "$backend" in
    tensorflow) ;;
    jax|torch) extras+=",$backend" ;;
    *) echo "Error: unknown backend '$backend': choose from tensorflow, jax, torch." >&2; exit 2 ;;
  esac
done
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [[ ",$extras," == *",torch,"* ]]; then
  # The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".[$extras]"
.venv/bin/python - "${backends[@]}" <<'PY'
import importlib, sys
versions = {name: importlib.import_module(name).__version__
            for name in ["keras", "tensorflow", *[b for b in sys.argv[1:] if b != "tensorflow"]]}
print(" | ".join(f"{name} {version}" for name, version in versions.items()))
PY
