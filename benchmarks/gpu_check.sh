#!/usr/bin/env bash
# Step throughput of MAE and ccMIM at ViT-B/16, 224 px, bfloat16 mixed
# precision, on one GPU, for each Keras backend: the table of
# benchmarks/step_throughput.py. Runs in under 8 minutes: the backends run
# one after the other, each capped (build + XLA compile + timing) at
# TF_TIMEOUT / JAX_TIMEOUT / TORCH_TIMEOUT seconds (190 / 140 / 110), and the
# whole run at 470 s. A backend that runs out of time shows as an error row.
#
#   bash benchmarks/gpu_check.sh [extra step_throughput.py flags]
#
# Environment: PYTHON (default: .venv/bin/python if present, else python3),
# BACKENDS (default tensorflow,jax,torch), BATCH_SIZE (default 128),
# TF_TIMEOUT, JAX_TIMEOUT, TORCH_TIMEOUT, OUTPUT (default gpu_check.json).
# The Python environment needs GPU builds of the backends it runs.
set -euo pipefail

cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
BACKENDS="${BACKENDS:-tensorflow,jax,torch}"
BATCH_SIZE="${BATCH_SIZE:-128}"
TF_TIMEOUT="${TF_TIMEOUT:-190}"
JAX_TIMEOUT="${JAX_TIMEOUT:-140}"
TORCH_TIMEOUT="${TORCH_TIMEOUT:-110}"
OUTPUT="${OUTPUT:-gpu_check.json}"

fail() { echo "gpu_check: $*" >&2; exit 2; }

# 1. A GPU must be visible before anything is spent on imports.
command -v nvidia-smi >/dev/null 2>&1 \
  || fail "no GPU visible: nvidia-smi is not installed or not on PATH."
nvidia-smi -L 2>/dev/null | grep -q '^GPU ' \
  || fail "no GPU visible: 'nvidia-smi -L' lists no GPU (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES:-unset}')."
nvidia-smi -L | head -n 1

# 2. One GPU is enough and the numbers are per GPU.
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
# JAX: allocate on demand so its peak-memory figure is the model's, not 75%.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

# 3. The benchmark. --require_gpu makes a backend that sees no GPU (e.g. a
# CPU-only build) fail with "<backend> sees no GPU" instead of timing the CPU;
# --xla_dump looks for cuDNN fused attention in the TF and JAX programs;
# --nointerleave_backends keeps one backend's process (and GPU memory) alive
# at a time. The matmul peak is 10 chained 8192^3 matmuls per sample (one
# 2048^3 matmul is too short to time on a GPU).
exec timeout --kill-after=10 470 "$PYTHON" benchmarks/step_throughput.py \
  --preset=vit_base_patch16_224 \
  --batch_size="$BATCH_SIZE" \
  --dtype_policy=mixed_bfloat16 \
  --backends="$BACKENDS" \
  --warmup_steps=2 --steps=5 --repeats=3 \
  --matmul_size=8192 --matmul_inner=10 --matmul_repeats=5 \
  --require_gpu --xla_dump --nointerleave_backends \
  --backend_timeouts="tensorflow=$TF_TIMEOUT,jax=$JAX_TIMEOUT,torch=$TORCH_TIMEOUT" \
  --output="$OUTPUT" \
  "$@"
