"""The masking metrics on hand-computed cases, on every backend."""

import numpy as np
import pytest
from keras import ops

from keras_ccmim import masking_metrics as mm

# Two images of 4 patches, K = 2 masked each; 3 of the 8 patches foreground.
MASK = np.array([[1, 1, 0, 0], [1, 0, 0, 1]], "float32")
FG = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], "float32")


def test_foreground_lift_by_hand():
    # masked fg fraction 2/4 over the fg fraction 3/8
    assert float(mm.foreground_lift(MASK, FG)) == pytest.approx((2 / 4) / (3 / 8))
    assert float(mm.foreground_lift(ops.ones((2, 4)), FG)) == pytest.approx(1.0)


def test_ceiling_is_the_lift_of_foreground_first():
    # Foreground first: image 0 masks its 1 fg patch (+1 bg), image 1 its 2.
    # min(2, 1) + min(2, 2) = 3 of the 4 masked patches are fg.
    expected = (3 / 4) / (3 / 8)
    assert float(mm.foreground_lift_max(MASK, FG)) == pytest.approx(expected)
    best = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")
    assert float(mm.foreground_lift(best, FG)) == pytest.approx(expected)
    # The ceiling min(N/K, 1/fg share): K = 3 of 4, fg share 1/4 -> N/K = 4/3.
    fg = np.array([[1, 0, 0, 0]], "float32")
    assert float(mm.foreground_lift_max(np.array([[1, 1, 1, 0]], "float32"), fg)) == pytest.approx(4 / 3)


def test_selectivity_is_zero_random_one_best_negative_when_avoiding():
    values = mm.masking_metrics(MASK, FG)
    assert set(values) == set(mm.MASKING_METRICS)
    lift, top = (2 / 4) / (3 / 8), (3 / 4) / (3 / 8)
    assert values["mask_selectivity"] == pytest.approx((lift - 1) / (top - 1))  # 1/3
    best = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")
    assert mm.masking_metrics(best, FG)["mask_selectivity"] == pytest.approx(1.0)
    avoid = np.array([[0, 1, 1, 0], [0, 0, 1, 1]], "float32")  # no fg masked: lift 0
    assert mm.masking_metrics(avoid, FG)["mask_selectivity"] == pytest.approx((0 - 1) / (top - 1))
    # A masked share equal to the fg share: lift 1, selectivity 0.
    even = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], "float32")
    fg_even = np.array([[1, 0, 0, 0], [0, 0, 1, 0]], "float32")
    assert mm.masking_metrics(even, fg_even)["foreground_lift"] == pytest.approx(1.0)
    assert mm.masking_metrics(even, fg_even)["mask_selectivity"] == pytest.approx(0.0)


def test_no_choice_gives_zero_selectivity():
    # Every patch foreground: the ceiling is 1, selectivity is defined as 0.
    values = mm.masking_metrics(MASK, np.ones_like(FG))
    assert values["foreground_lift_max"] == pytest.approx(1.0)
    assert values["mask_selectivity"] == 0.0


def test_random_masking_reference_centres_on_zero():
    rng = np.random.default_rng(0)
    fg = (rng.random((64, 64)) < 0.2).astype("float32")
    mask = np.zeros((64, 64), "float32")
    mask[:, :48] = 1.0
    reference = mm.random_masking_metrics(mask, fg, draws=200, seed=1)
    assert reference["foreground_lift"]["mean"] == pytest.approx(1.0, abs=0.01)
    assert abs(reference["mask_selectivity"]["mean"]) < 0.03
    assert 0.0 < reference["mask_selectivity"]["std"] < 0.2
    assert reference == mm.random_masking_metrics(mask, fg, draws=200, seed=1)
