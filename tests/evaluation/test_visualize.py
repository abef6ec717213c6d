"""Reconstruction pictures."""

import numpy as np
import pytest

from keras_ccmim.evaluation import colourize, denormalize_prediction, reconstruction_grid
from keras_ccmim.evaluation.visualize import reconstruction_columns
from keras_ccmim.layers.patching import patchify
from keras_ccmim.losses import normalize_patches
from tests.testing_utils import tiny_pretrainer, to_numpy


def test_denormalize_inverts_norm_pix():
    rng = np.random.default_rng(0)
    target = rng.normal(size=(2, 4, 48)).astype("float32") * 3 + 1
    normalised = to_numpy(normalize_patches(target))
    np.testing.assert_allclose(denormalize_prediction(normalised, target, True), target, atol=1e-4)
    np.testing.assert_array_equal(denormalize_prediction(normalised, target, False), normalised)


def test_colourize_is_ordered_and_in_range():
    colours = colourize(np.linspace(0, 1, 11))
    assert colours.shape == (11, 3) and colours.min() >= 0 and colours.max() <= 1
    assert np.all(np.diff(colours.mean(1)) > 0)  # brighter with the value


@pytest.fixture(scope="module")
def pretrainers():
    """One tiny pretrainer with scores and one without (built once: compiling
    their predict function is the slow part on JAX)."""
    return {masking: tiny_pretrainer(masking=masking) for masking in ("importance_sampling",
                                                                       "random")}


def sample_images(seed):
    return np.random.default_rng(seed).normal(size=(3, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("masking,last_title", [("importance_sampling", "importance"),
                                                 ("random", "masked = white")])
def test_columns(pretrainers, masking, last_title):
    original_images = sample_images(1)
    columns, titles = reconstruction_columns(pretrainers[masking], original_images)
    assert titles == ["original", "visible", "reconstruction", last_title]
    original, visible, reconstruction, _ = columns
    assert all(c.shape == (3, 16, 16, 3) for c in columns)
    # Visible patches are pasted from the original, and only those are.
    unchanged = np.all(np.isclose(patchify(reconstruction, 4), patchify(original, 4)), axis=-1)
    shown = np.all(np.isclose(patchify(visible, 4), patchify(original, 4)), axis=-1)
    np.testing.assert_array_equal(to_numpy(unchanged), to_numpy(shown))
    assert 0 < to_numpy(shown).mean() < 1


def test_grid_png(pretrainers, tmp_path):
    from PIL import Image

    model = pretrainers["importance_sampling"]
    images = sample_images(2)
    path = tmp_path / "grid.png"
    picture = reconstruction_grid(model, images, str(path))
    # 16 px images are upscaled 6x to 96 px; 4 columns, 3 rows, 2 px gaps, 14 px header.
    assert picture.shape == (14 + 3 * 98 + 2, 4 * 98 + 2, 3)
    assert np.array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        reconstruction_grid(model, images[0])
