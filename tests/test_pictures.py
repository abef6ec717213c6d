"""The masks picture and its labelled grid, against numpy references."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from keras_ccmim.losses import normalize_patches
from keras_ccmim.pictures import (
    LABEL_HEIGHT,
    colourize,
    denormalize_prediction,
    grid_picture,
    mask_columns,
    mask_picture,
)
from tests.testing_utils import to_numpy

MEAN = np.array([0.485, 0.456, 0.406], "float32")
STD = np.array([0.229, 0.224, 0.225], "float32")


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


def _patch(array, b, n, p=4, grid=2):
    """Patch `n` (row-major on a `grid` x `grid` grid) of image `b`."""
    i, j = divmod(n, grid)
    return array[b, i * p : (i + 1) * p, j * p : (j + 1) * p]


def _outputs(rng, with_pred=True, with_scores=True):
    outputs = {"mask": np.array([[1, 0, 0, 1], [0, 1, 1, 1]], "float32")}
    if with_pred:
        outputs["pred"] = rng.normal(size=(2, 4, 4 * 4 * 3)).astype("float32")
    if with_scores:
        outputs["scores"] = np.array([[0.1, 0.5, 0.2, 0.9], [3.0, 1.0, 2.0, 0.0]], "float32")
    return outputs


@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_mask_columns_match_a_numpy_reference(norm_pix_loss):
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    outputs = _outputs(rng)
    columns, labels = mask_columns(images, outputs, 4, norm_pix_loss)
    assert labels == ["image", "masked input", "reconstruction", "importance"]
    image, masked, reconstruction, importance = columns
    shown = np.clip(images * STD + MEAN, 0, 1)
    np.testing.assert_allclose(image, shown, atol=1e-6)
    for b in range(2):
        for n in range(4):
            is_masked = outputs["mask"][b, n] == 1
            # Masked patches grey, visible ones the image's.
            expected = np.full((4, 4, 3), 0.5) if is_masked else _patch(shown, b, n)
            np.testing.assert_allclose(_patch(masked, b, n), expected, atol=1e-6)
            # The reconstruction: the prediction where masked, in image units.
            if is_masked:
                pred = outputs["pred"][b, n].reshape(4, 4, 3)
                if norm_pix_loss:
                    target = _patch(images, b, n)
                    pred = pred * np.sqrt(target.var(ddof=1) + 1e-6) + target.mean()
                expected = np.clip(pred * STD + MEAN, 0, 1)
            np.testing.assert_allclose(_patch(reconstruction, b, n), expected, atol=1e-5)
    # Importance: the heat colour of the min-max scaled score over grey.
    for b, n, value in [(0, 3, 1.0), (0, 0, 0.0), (1, 0, 1.0), (1, 2, 2 / 3)]:
        grey = _patch(shown, b, n).mean(axis=-1, keepdims=True)
        expected = 0.7 * colourize(np.float32(value)) + 0.3 * grey
        np.testing.assert_allclose(_patch(importance, b, n), expected, atol=1e-5)


@pytest.mark.parametrize("with_pred,with_scores,labels", [
    (False, False, ["image", "masked input"]),
    (True, False, ["image", "masked input", "reconstruction"]),
    (False, True, ["image", "masked input", "importance"]),
])
def test_columns_follow_the_outputs(with_pred, with_scores, labels):
    rng = np.random.default_rng(2)
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    columns, got = mask_columns(images, _outputs(rng, with_pred, with_scores), 4, False)
    assert got == labels and len(columns) == len(labels)


def _label_strip(label, width):
    """The label as `grid_picture` writes it, drawn alone on white."""
    strip = Image.new("RGB", (width, LABEL_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(strip).text((2, 1), label, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(strip)


def test_mask_picture_is_a_labelled_grid():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    outputs = _outputs(rng)
    picture = mask_picture(images, outputs, 4, False)
    # 8 px images upscaled 12x to 96 px; 4 columns, 2 rows, 2 px gaps, the labels on top.
    assert picture.dtype == np.uint8
    assert picture.shape == (LABEL_HEIGHT + 2 * 98 + 2, 4 * 98 + 2, 3)
    columns, labels = mask_columns(images, outputs, 4, False)
    for c, (column, label) in enumerate(zip(columns, labels)):
        x = 2 + c * 98
        # Each column under its label (the label only there)...
        strip = picture[:LABEL_HEIGHT, x : x + 96]
        np.testing.assert_array_equal(strip, _label_strip(label, 98)[:, :96])
        assert (strip < 128).any()
        # ... and each row an image of it, upscaled.
        for b in range(2):
            y = LABEL_HEIGHT + 2 + b * 98
            cell = picture[y : y + 96, x : x + 96].astype("float32") / 255
            expected = np.clip(column[b], 0, 1).repeat(12, axis=0).repeat(12, axis=1)
            np.testing.assert_allclose(cell, expected, atol=0.5 / 255 + 1e-6)
    # max_images draws the first rows only.
    first = mask_picture(images, outputs, 4, False, max_images=1)
    np.testing.assert_array_equal(first, picture[: LABEL_HEIGHT + 98 + 2])


def test_grid_picture_without_labels_and_bad_images():
    picture = grid_picture([np.zeros((1, 4, 4, 3)), np.ones((1, 4, 4, 3))], scale=2)
    assert picture.shape == (2 + 8 + 2, 2 * 10 + 2, 3)
    assert (picture[2:10, 2:10] == 0).all() and (picture[2:10, 12:20] == 255).all()
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        mask_columns(np.zeros((8, 8, 3)), {"mask": np.zeros((1, 4))}, 4, False)
