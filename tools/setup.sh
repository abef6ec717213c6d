#!/usr/bin/env bash
# Creates .venv in the repository root with keras-ccmim and all three Keras
# backends (TensorFlow, JAX, PyTorch; CPU builds), ready for the tests and the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The CPU build of torch, pinned: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[jax,torch,test,plots]"
.venv/bin/python -c "import keras, tensorflow, jax, torch; print('keras', keras.__version__, '| tensorflow', tensorflow.__version__, '| jax', jax.__version__, '| torch', torch.__version__)"
