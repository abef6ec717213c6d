"""A `mixed_bfloat16` ccMIM step keeps the losses of float32: the GPU run
trains in bfloat16, so its precision is checked here first, on every backend."""

import keras
import numpy as np

from tests.testing_utils import tiny_pretrainer

STEPS = 4
# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%); through
# the blocks, the losses and 4 AdamW steps the per-step losses moved at most
# 0.6% from float32 (each backend, each loss term). 3% leaves room for that,
# and little for a wrong cast: bfloat16 weights and optimizer state (the
# "bfloat16" policy) moved them 15-33% on JAX.
RELATIVE_TOLERANCE = 0.03
LOSSES = ("loss", "reconstruction_loss", "contrastive_loss")


def _images(n=16, size=16, seed=0):
    rng = np.random.RandomState(seed)
    base = rng.uniform(-1.5, 1.5, (n, 1, 1, 3))
    return (base + 0.5 * rng.randn(n, size, size, 3)).astype("float32")


def _per_step_losses(policy, weights=None):
    """Per-step losses of `STEPS` ccMIM steps (importance sampling + InfoNCE)
    on one fixed batch, from the same weights and seeds; and the weights."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = tiny_pretrainer(seed=0)
        model.build()
    finally:
        keras.config.set_dtype_policy(previous)
    if weights is not None:
        model.set_weights(weights)
    start = model.get_weights()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    images = _images()
    history = model.fit(images, batch_size=len(images), epochs=STEPS, shuffle=False,
                        verbose=0).history
    return {name: np.asarray(history[name]) for name in LOSSES}, start, model


def test_mixed_bfloat16_step_losses_follow_float32():
    f32, weights, _ = _per_step_losses("float32")
    bf16, _, model = _per_step_losses("mixed_bfloat16", weights)
    assert keras.backend.standardize_dtype(model.encoder.compute_dtype) == "bfloat16"
    assert all(keras.backend.standardize_dtype(v.dtype) == "float32"
               for v in model.trainable_variables)
    for name in LOSSES:
        assert np.isfinite(bf16[name]).all(), name
        relative = np.abs(bf16[name] - f32[name]) / np.abs(f32[name])
        assert relative.max() < RELATIVE_TOLERANCE, (name, f32[name], bf16[name], relative)
    # The check can see a difference: the losses are not trivially equal.
    assert np.abs(bf16["loss"] - f32["loss"]).max() > 0
