import numpy as np
import pytest
from keras import ops

from keras_ccmim import losses
from tests.testing_utils import to_numpy, value_and_grads


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_infonce(student, teacher, tau):
    u, t = np_normalize(student), np_normalize(teacher)
    b = len(u)
    total = 0.0
    for i in range(b):
        positive = np.exp(u[i] @ t[i] / tau)
        negatives = sum(np.exp(u[i] @ u[j] / tau) for j in range(b) if j != i)
        negatives += sum(np.exp(u[i] @ t[j] / tau) for j in range(b))
        total += -np.log(positive / negatives)
    return total / b


def np_infonce_cross(student, teacher, tau):
    u, t = np_normalize(student), np_normalize(teacher)
    logits = u @ t.T / tau
    log_prob = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    return 2 * tau * -np.mean(np.diag(log_prob))


def np_align(prediction, teacher):
    p, z = np_normalize(prediction), np_normalize(teacher)
    return np.mean(1 - (p * z).sum(1))


@pytest.fixture
def pair():
    rng = np.random.RandomState(0)
    return rng.randn(6, 5).astype("float32"), rng.randn(6, 5).astype("float32")


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_infonce_matches_numpy(pair, tau):
    s, t = pair
    np.testing.assert_allclose(float(losses.infonce_loss(s, t, tau)), np_infonce(s, t, tau), rtol=1e-4)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_infonce_cross_matches_numpy(pair, tau):
    s, t = pair
    np.testing.assert_allclose(float(losses.infonce_cross_loss(s, t, tau)), np_infonce_cross(s, t, tau), rtol=1e-4)


def test_align_matches_numpy(pair):
    s, t = pair
    np.testing.assert_allclose(float(losses.align_loss(s, t)), np_align(s, t), rtol=1e-5)


def test_dispatch_and_unknown_name(pair):
    s, t = pair
    assert float(losses.contrastive_loss("none", s, t, 0.5)) == 0.0
    np.testing.assert_allclose(float(losses.contrastive_loss("infonce", s, t, 0.5)), np_infonce(s, t, 0.5), rtol=1e-4)
    with pytest.raises(ValueError, match="Unknown contrastive"):
        losses.contrastive_loss("simclr", s, t, 0.5)


@pytest.mark.parametrize("kind", ["infonce", "infonce_cross", "align"])
def test_gradient_flows_to_student_only(pair, kind):
    s, t = pair
    _, (g_student, g_teacher) = value_and_grads(
        lambda a, b: losses.contrastive_loss(kind, a, b, 0.5), s, t
    )
    np.testing.assert_array_equal(g_teacher, 0.0)
    assert np.abs(g_student).max() > 1e-4


def test_norm_pix_matches_mae_formula():
    x = np.random.RandomState(1).randn(2, 3, 12).astype("float32")
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, ddof=1, keepdims=True)
    np.testing.assert_allclose(to_numpy(losses.normalize_patches(x)), (x - mean) / np.sqrt(var + 1e-6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_reconstruction_uses_masked_patches_only(norm_pix):
    rng = np.random.RandomState(2)
    target = rng.randn(2, 8, 12).astype("float32")
    pred = rng.randn(2, 8, 12).astype("float32")
    mask = (rng.rand(2, 8) < 0.5).astype("float32")
    mask[:, 0] = 1.0
    mask[:, 1] = 0.0
    t = to_numpy(losses.normalize_patches(target)) if norm_pix else target
    per_patch = ((pred - t) ** 2).mean(-1)
    expected = (per_patch * mask).sum() / mask.sum()
    got = float(losses.reconstruction_loss(target, pred, mask, norm_pix))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    changed = pred.copy()
    changed[mask == 0] += 100.0  # visible patches may be anything
    assert float(losses.reconstruction_loss(target, changed, mask, norm_pix)) == pytest.approx(got, rel=1e-6)
    _, (g_pred,) = value_and_grads(lambda p: losses.reconstruction_loss(target, p, mask, norm_pix), pred)
    np.testing.assert_array_equal(g_pred[mask == 0], 0.0)
    assert np.abs(g_pred[mask == 1]).min() > 0
