import math

import keras
import numpy as np
import pytest

from keras_ccmim.training import WarmupCosine


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_warmup_then_cosine_to_zero():
    schedule = WarmupCosine(1.0, warmup_steps=10, total_steps=110)
    assert _lr(schedule, 0) == 0.0
    assert _lr(schedule, 5) == pytest.approx(0.5)
    assert _lr(schedule, 10) == pytest.approx(1.0)
    assert _lr(schedule, 60) == pytest.approx(0.5, abs=1e-6)
    assert _lr(schedule, 60 + 25) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)), abs=1e-6)
    assert _lr(schedule, 110) == pytest.approx(0.0, abs=1e-7)
    assert _lr(schedule, 500) == pytest.approx(0.0, abs=1e-7)
    values = [_lr(schedule, s) for s in range(10, 111)]
    assert np.all(np.diff(values) <= 1e-7)


def test_no_warmup():
    schedule = WarmupCosine(2.0, warmup_steps=0, total_steps=4)
    assert _lr(schedule, 0) == pytest.approx(2.0)
    assert _lr(schedule, 2) == pytest.approx(1.0, abs=1e-6)


def test_serialization_round_trip():
    schedule = WarmupCosine(3e-4, warmup_steps=7, total_steps=70)
    assert schedule.get_config() == {
        "peak_learning_rate": 3e-4,
        "warmup_steps": 7,
        "total_steps": 70,
        "accum_steps": 1,
    }
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, WarmupCosine)
    assert clone.get_config() == schedule.get_config()


def test_accumulation_reads_the_rate_at_the_first_step_of_each_update():
    plain = WarmupCosine(1.0, warmup_steps=2, total_steps=8)
    accumulated = WarmupCosine(1.0, warmup_steps=8, total_steps=32, accum_steps=4)
    for update in range(8):
        want = float(keras.ops.convert_to_numpy(plain(update)))
        for step in range(4 * update, 4 * update + 4):
            got = float(keras.ops.convert_to_numpy(accumulated(step)))
            assert got == pytest.approx(want, abs=1e-7), (update, step)


def test_schedule_drives_the_optimizer():
    optimizer = keras.optimizers.AdamW(WarmupCosine(1.0, warmup_steps=4, total_steps=8))
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
        WarmupCosine(**kwargs)
