"""Gradient accumulation (`accum_steps`, Keras' `gradient_accumulation_steps`):
4 accumulated steps of batch B are one step of batch 4B.

The comparison is exact by construction: the reconstruction-only objective
(`contrastive="none"`) with a deterministic mask (`masking="importance"`,
top-K of the [CLS] attention) computes each image's loss alone, and every
image masks the same number of patches, so the mean over 4B images is the
mean of the 4 means over B. (Random masking draws its noise per call, so
the 4 small batches would get other masks than the big one; ccMIM's
projector BatchNorm and in-batch negatives see B images instead of 4B.)
The learning-rate schedule is read at the first step of each accumulation
(`warmup_cosine(..., accum_steps=...)`), so update k gets batch 4B's rate k."""

import keras
import numpy as np
import pytest

from keras_ccmim.training import PretrainConfig, resolve_config
from keras_ccmim.training.workdir import RESUMABLE_CHANGES
from keras_ccmim.training.optimizer import make_optimizer, training_steps
from keras_ccmim.training.schedules import warmup_cosine
from tests.testing_utils import to_numpy

B, ACCUM, UPDATES = 4, 4, 2


def _pair(tiny_pretrainer):
    models = [tiny_pretrainer(masking="importance", contrastive="none") for _ in range(2)]
    for model in models:
        model.build()
    models[1].set_weights(models[0].get_weights())
    return models


def _sgd(schedule, accum):
    # SGD moves the weights by the gradient itself, so a wrong scale (a sum
    # of the 4 gradients, not their mean) or a rate read at the wrong step
    # shows; Adam's first steps are nearly `lr * sign(g)` and would hide it.
    return keras.optimizers.SGD(schedule, gradient_accumulation_steps=accum if accum > 1 else None)


def test_four_accumulated_steps_equal_one_step_of_four_times_the_batch(tiny_pretrainer):
    images = np.random.RandomState(0).rand(UPDATES * ACCUM * B, 16, 16, 3).astype("float32")
    accumulated, big = _pair(tiny_pretrainer)
    # No warmup and a cosine over 4 updates: the rate changes every update.
    accumulated.compile(optimizer=_sgd(warmup_cosine(0.05, 0, 4 * ACCUM, accum_steps=ACCUM), ACCUM))
    big.compile(optimizer=_sgd(warmup_cosine(0.05, 0, 4), 1))
    start = [to_numpy(w).copy() for w in big.trainable_weights]

    small_history = accumulated.fit(images, batch_size=B, shuffle=False, verbose=0).history
    big_history = big.fit(images, batch_size=ACCUM * B, shuffle=False, verbose=0).history

    assert int(to_numpy(accumulated.optimizer.iterations)) == UPDATES
    assert int(to_numpy(training_steps(accumulated.optimizer))) == UPDATES * ACCUM
    assert int(to_numpy(big.optimizer.iterations)) == UPDATES
    moved = max(float(np.max(np.abs(to_numpy(w) - s))) for w, s in zip(big.trainable_weights, start))
    assert moved > 1e-3  # the updates did something
    difference = max(
        float(np.max(np.abs(to_numpy(a) - to_numpy(b))))
        for a, b in zip(accumulated.trainable_weights, big.trainable_weights)
    )
    print(f"max |weight difference|  {difference:.2e} (weights moved {moved:.2e})")
    assert difference < 1e-6
    np.testing.assert_allclose(small_history["loss"], big_history["loss"], rtol=1e-5)


def test_learning_rate_rule_and_steps_follow_accum_steps(tiny_run, tiny_pretrainer):
    config, _ = resolve_config(tiny_run(accum_steps=4, batch_size=16, steps_per_epoch=None))
    assert config.effective_batch_size == 64
    assert config.learning_rate == pytest.approx(config.blr * 16 * 4 / 256)
    assert config.steps_per_epoch == 128 // 16  # 8, a multiple of 4
    with pytest.raises(ValueError, match="steps_per_epoch 6 is not a multiple of accum_steps 4"):
        resolve_config(tiny_run(accum_steps=4, steps_per_epoch=6))
    with pytest.raises(ValueError, match="accum_steps must be an integer >= 1"):
        resolve_config(tiny_run(accum_steps=0))
    assert "accum_steps" not in RESUMABLE_CHANGES  # it changes the run
    assert PretrainConfig().accum_steps == 1
    model = tiny_pretrainer(contrastive="none", masking="random")
    assert make_optimizer(model, 1e-3, accum_steps=4).gradient_accumulation_steps == 4
    assert make_optimizer(model, 1e-3).gradient_accumulation_steps is None