import math

import keras
import numpy as np
import pytest

from keras_ccmim.training import warmup_cosine
from keras_ccmim.training.schedules import PerUpdate


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def _lrs(schedule, steps):
    """The schedule at many steps. JAX runs `CosineDecay`'s `ops.cond`
    eagerly at ~0.1 s a call; compiled once, as in training, it is instant."""
    if keras.backend.backend() == "jax":
        import jax

        schedule = jax.jit(schedule)
    return [_lr(schedule, step) for step in steps]


def _reference(peak, warmup, total, step):
    """The hand-written schedule this project used before Keras' CosineDecay
    replaced it, in float64."""
    if step < warmup:
        return peak * step / max(warmup, 1)
    progress = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))


@pytest.mark.parametrize("peak, warmup, total", [
    (1.5e-3, 40, 800),   # the demo's scale
    (6e-4, 0, 97),       # no warmup
    (2.4e-3, 1, 2),      # the shortest schedule
    (1.5e-4 * 4096 / 256, 312 * 40, 312 * 800),  # the paper's ImageNet recipe
])
def test_every_step_matches_the_previous_schedule(peak, warmup, total):
    schedule = warmup_cosine(peak, warmup, total)
    steps = sorted(set(np.linspace(0, total + 10, 200).astype(int).tolist())
                   | {0, max(warmup - 1, 0), warmup, warmup + 1, total, total + 1})
    for step, lr in zip(steps, _lrs(schedule, steps)):
        assert abs(lr - _reference(peak, warmup, total, step)) <= 1e-9, step


def test_warmup_then_cosine_to_zero():
    schedule = warmup_cosine(1.0, warmup_steps=10, total_steps=110)
    assert _lr(schedule, 0) == 0.0
    assert _lr(schedule, 5) == pytest.approx(0.5)
    assert _lr(schedule, 10) == pytest.approx(1.0)
    assert _lr(schedule, 60) == pytest.approx(0.5, abs=1e-6)
    assert _lr(schedule, 110) == pytest.approx(0.0, abs=1e-7)
    assert _lr(schedule, 500) == pytest.approx(0.0, abs=1e-7)
    values = _lrs(schedule, range(10, 111))
    assert np.all(np.diff(values) <= 1e-7)


def test_serialization_round_trip():
    schedule = warmup_cosine(3e-4, warmup_steps=7, total_steps=70)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, keras.optimizers.schedules.CosineDecay)
    assert [_lr(clone, s) for s in (0, 3, 7, 40, 70)] == [_lr(schedule, s) for s in (0, 3, 7, 40, 70)]


def test_accumulation_reads_the_rate_at_the_first_step_of_each_update():
    plain = warmup_cosine(1.0, warmup_steps=2, total_steps=8)
    accumulated = warmup_cosine(1.0, warmup_steps=8, total_steps=32, accum_steps=4)
    wanted = _lrs(plain, range(8))
    got = _lrs(accumulated, range(32))
    for step, lr in enumerate(got):
        assert lr == pytest.approx(wanted[step // 4], abs=1e-7), step
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(accumulated))
    assert isinstance(clone, PerUpdate) and clone.accum_steps == 4
    assert _lrs(clone, range(32)) == got


def test_schedule_drives_the_optimizer():
    optimizer = keras.optimizers.AdamW(warmup_cosine(1.0, warmup_steps=4, total_steps=8))
    variable = keras.Variable(np.ones((2, 2), "float32"))
    optimizer.build([variable])
    optimizer.iterations.assign(2)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(peak_learning_rate=0.0, warmup_steps=1, total_steps=2), "positive"),
        (dict(peak_learning_rate=1.0, warmup_steps=-1, total_steps=2), "warmup_steps"),
        (dict(peak_learning_rate=1.0, warmup_steps=5, total_steps=5), "larger than warmup"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        warmup_cosine(**kwargs)
