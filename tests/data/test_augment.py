import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    normalize,
    pretrain_transform,
    random_resized_crop,
    random_resized_crop_box,
    unnormalize,
)


def _two_colour_image(height=40, width=56):
    """Red off-centre disc on blue; the mask is the disc."""
    yy, xx = np.mgrid[:height, :width]
    mask = ((yy - 14.0) ** 2 + (xx - 18.0) ** 2 <= 11.0**2).astype(np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 255 * mask
    image[..., 2] = 255 * (1 - mask)
    return image, mask


def test_normalize_statistics_and_inverse():
    images = np.random.randint(0, 256, size=(2, 5, 7, 3)).astype(np.uint8)
    normalised = np.asarray(normalize(images))
    assert normalised.dtype == np.float32
    np.testing.assert_allclose(
        normalised[0, 0, 0],
        (images[0, 0, 0] / 255.0 - np.array(IMAGENET_MEAN)) / IMAGENET_STD,
        rtol=1e-5,
    )
    np.testing.assert_allclose(unnormalize(normalised), images / 255.0, atol=1e-6)


def test_unnormalize_backend_tensor():
    images = np.random.uniform(0, 1, size=(2, 4, 4, 3)).astype(np.float32)
    normalised = keras.ops.convert_to_tensor(np.asarray(normalize(images * 255.0)))
    restored = unnormalize(normalised)
    assert keras.backend.standardize_dtype(restored.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored), images, atol=1e-5)
    raw = unnormalize(np.full((1, 3), 10.0), clip=False)
    assert raw.max() > 1.0


def test_crop_box_scale_and_ratio():
    height, width = 60, 80
    for i in range(60):
        top, left, crop_h, crop_w = (
            int(v) for v in random_resized_crop_box(tf.constant([i, 7]), height, width)
        )
        area = crop_h * crop_w / (height * width)
        assert 0.19 <= area <= 1.0
        assert 0.7 <= crop_w / crop_h <= 1.4
        assert 0 <= top and top + crop_h <= height
        assert 0 <= left and left + crop_w <= width


def test_crop_box_fallback_for_extreme_aspect():
    # A 4x100 strip admits no 3/4-4/3 box of 20% area: central fallback.
    top, left, crop_h, crop_w = (
        int(v) for v in random_resized_crop_box(tf.constant([0, 1]), 4, 100)
    )
    assert (crop_h, top) == (4, 0)
    assert crop_w == round(4 * 4 / 3)
    assert left == (100 - crop_w) // 2


def test_random_resized_crop_shape_and_determinism():
    image, mask = _two_colour_image()
    seed = tf.constant([3, 4])
    out, out_mask = random_resized_crop(image, seed, 24, mask=mask)
    assert out.shape == (24, 24, 3) and out.dtype == tf.float32
    assert out_mask.shape == (24, 24)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 255.0
    again = random_resized_crop(image, seed, 24)
    np.testing.assert_array_equal(out.numpy(), again.numpy())


def test_augmentation_keeps_image_and_mask_aligned():
    image, mask = _two_colour_image()
    flipped_some = set()
    for i in range(16):
        out, out_mask = pretrain_transform(image, tf.constant([i, 0]), 32, mask=mask)
        assert out.shape == (32, 32, 3) and out_mask.shape == (32, 32)
        rgb = unnormalize(out.numpy())
        red = rgb[..., 0] > rgb[..., 2]
        out_mask = out_mask.numpy().astype(bool)
        assert set(np.unique(out_mask.astype(np.uint8))) <= {0, 1}
        assert np.mean(red != out_mask) < 0.03
        if out_mask.any():
            flipped_some.add(np.argwhere(out_mask)[:, 1].mean() > 16)
    assert flipped_some == {True, False}  # flips happened, and were aligned.


def test_different_seeds_differ():
    image, _ = _two_colour_image()
    a, _ = pretrain_transform(image, tf.constant([1, 2]), 16)
    b, _ = pretrain_transform(image, tf.constant([2, 2]), 16)
    assert not np.array_equal(a.numpy(), b.numpy())


def test_eval_transform_resizes_and_center_crops():
    image, mask = _two_colour_image(height=40, width=56)
    out, out_mask = eval_transform(image, 20, mask=mask)
    assert out.shape == (20, 20, 3) and out_mask.shape == (20, 20)
    rgb = unnormalize(out.numpy())
    assert np.mean((rgb[..., 0] > rgb[..., 2]) != out_mask.numpy().astype(bool)) < 0.03
    # Same size in, same image out.
    square = np.random.randint(0, 256, size=(16, 16, 3)).astype(np.uint8)
    same, none = eval_transform(square, 16)
    assert none is None
    np.testing.assert_allclose(unnormalize(same.numpy()) * 255.0, square, atol=1e-3)
    cropped, _ = eval_transform(image, 16, crop_fraction=0.5)
    assert cropped.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="crop_fraction"):
        eval_transform(image, 16, crop_fraction=0.0)
