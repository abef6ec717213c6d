"""A pretrainer's picture on given images (`reconstruction_grid`)."""

import numpy as np
import pytest

from keras_ccmim.evaluation import reconstruction_grid
from keras_ccmim.layers.patching import patchify
from keras_ccmim.pictures import LABEL_HEIGHT, mask_columns
from tests.testing_utils import tiny_pretrainer, to_numpy


@pytest.fixture(scope="module")
def pretrainers():
    """One tiny pretrainer with scores and one without (built once: compiling
    their predict function is the slow part on JAX)."""
    return {masking: tiny_pretrainer(masking=masking) for masking in ("importance_sampling",
                                                                       "random")}


def sample_images(seed):
    return np.random.default_rng(seed).normal(size=(3, 16, 16, 3)).astype("float32")


@pytest.mark.parametrize("masking,labels", [
    ("importance_sampling", ["image", "masked input", "reconstruction", "importance"]),
    ("random", ["image", "masked input", "reconstruction"]),
])
def test_columns_of_a_model(pretrainers, masking, labels):
    model = pretrainers[masking]
    images = sample_images(1)
    outputs = model.predict_on_batch(images)
    columns, got = mask_columns(images, outputs, 4, model.norm_pix_loss)
    assert got == labels
    original, visible, reconstruction = columns[:3]
    assert all(c.shape == (3, 16, 16, 3) for c in columns)
    # Visible patches are pasted from the original, and only those are.
    unchanged = np.all(np.isclose(patchify(reconstruction, 4), patchify(original, 4)), axis=-1)
    shown = np.all(np.isclose(patchify(visible, 4), patchify(original, 4)), axis=-1)
    np.testing.assert_array_equal(to_numpy(unchanged), to_numpy(shown))
    np.testing.assert_array_equal(to_numpy(shown), 1 - np.asarray(outputs["mask"]))
    assert 0 < to_numpy(shown).mean() < 1


@pytest.mark.parametrize("masking,columns", [("importance_sampling", 4), ("random", 3)])
def test_grid_png(pretrainers, tmp_path, masking, columns):
    from PIL import Image

    model = pretrainers[masking]
    images = sample_images(2)
    path = tmp_path / "grid.png"
    picture = reconstruction_grid(model, images, str(path))
    # 16 px images are upscaled 6x to 96 px; 3 rows, 2 px gaps, the labels on top.
    assert picture.shape == (LABEL_HEIGHT + 3 * 98 + 2, columns * 98 + 2, 3)
    assert np.array_equal(np.asarray(Image.open(path)), picture)
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        reconstruction_grid(model, images[0])
