"""The linear probe learns a linearly separable toy problem."""

import numpy as np
import pytest

from keras_ccmim.evaluation import build_linear_probe, linear_probe


def blobs(rng, n, centres, offset):
    labels = rng.integers(0, len(centres), size=n)
    return (centres[labels] + rng.normal(scale=0.3, size=(n, centres.shape[1])) + offset), labels


def test_learns_separable_problem():
    rng = np.random.default_rng(0)
    # Far from the origin and badly scaled: the BatchNorm must standardise.
    centres = rng.normal(size=(6, 8)) * np.array([1, 1, 1, 1, 10, 10, 0.1, 0.1])
    train_x, train_y = blobs(rng, 600, centres, offset=50.0)
    eval_x, eval_y = blobs(rng, 300, centres, offset=50.0)
    result = linear_probe(train_x, train_y, eval_x, eval_y, epochs=20, batch_size=64)
    assert result.top1 > 95.0
    assert result.top5 == 100.0
    assert result.train_top1 > 95.0
    assert result.steps == 20 * 10
    assert set(result.to_dict()) == {
        "top1", "top5", "train_top1", "epochs", "steps", "learning_rate"
    }


def test_probe_is_batchnorm_without_affine_then_dense():
    model = build_linear_probe(5, 3)
    norm = model.get_layer("feature_norm")
    assert not norm.center and not norm.scale and norm.epsilon == pytest.approx(1e-6)
    assert [tuple(w.shape) for w in model.get_layer("head").weights] == [(5, 3), (3,)]
    assert len(model.trainable_weights) == 2


def test_bad_inputs_raise_clear_errors():
    x, y = np.zeros((4, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="differ in width"):
        linear_probe(x, y, np.zeros((2, 4)), np.array([0, 1]), epochs=1)
    with pytest.raises(ValueError, match="labels must have shape"):
        linear_probe(x, y[:3], x, y, epochs=1)
    with pytest.raises(ValueError, match="base_learning_rate must be positive"):
        linear_probe(x, y, x, y, epochs=1, base_learning_rate=0)
