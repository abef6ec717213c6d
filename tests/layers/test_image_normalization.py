import keras
import numpy as np
import pytest

from keras_ccmim.input_contract import IMAGENET_MEAN, IMAGENET_STD
from keras_ccmim.layers import ImageNormalization
from tests.testing_utils import assert_config_round_trip, save_and_load_keras, to_numpy


def numpy_normalization(images, low, high, mean, std):
    return ((images.astype("float64") - low) / (high - low) - np.array(mean)) / np.array(std)


def test_uint8_images_get_imagenet_normalised_floats():
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3)).astype("uint8")
    out = ImageNormalization()(pixels)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(out), numpy_normalization(pixels, 0, 255, IMAGENET_MEAN, IMAGENET_STD),
        atol=1e-5, rtol=0,
    )


def test_value_range_mean_std_and_bgr():
    images = np.random.default_rng(1).uniform(-1, 1, size=(2, 4, 4, 2)).astype("float32")
    layer = ImageNormalization(mean=(0.2, 0.7), std=(0.5, 0.25), value_range=(-1, 1))
    want = numpy_normalization(images, -1, 1, (0.2, 0.7), (0.5, 0.25))
    np.testing.assert_allclose(to_numpy(layer(images)), want, atol=1e-5, rtol=0)
    bgr = ImageNormalization(mean=(0.2, 0.7), std=(0.5, 0.25), value_range=(-1, 1),
                             channel_order="bgr")
    np.testing.assert_allclose(to_numpy(bgr(images[..., ::-1].copy())), want, atol=1e-5, rtol=0)


def test_float32_under_a_mixed_policy():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        layer = ImageNormalization()
        pixels = np.random.default_rng(3).uniform(0, 255, size=(1, 4, 4, 3)).astype("float32")
        out = layer(pixels)  # not cast to bfloat16 first (8 bits of mantissa)
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(out), numpy_normalization(pixels, 0, 255, IMAGENET_MEAN, IMAGENET_STD),
        atol=1e-6, rtol=0,
    )


def test_image_size_is_checked():
    layer = ImageNormalization(image_size=8)
    assert tuple(layer(np.zeros((1, 8, 8, 3), "uint8")).shape) == (1, 8, 8, 3)
    with pytest.raises(ValueError, match=r"takes 8x8 images, got 16x12.*image_size=\(16, 12\)"):
        layer(np.zeros((1, 16, 12, 3), "uint8"))
    with pytest.raises(ValueError, match="takes images with 3 channels, got 1"):
        layer(np.zeros((1, 8, 8, 1), "uint8"))
    with pytest.raises(ValueError, match="takes 8x8 images, got 16x16"):
        layer(keras.Input((16, 16, 3), dtype="uint8"))  # a symbolic call too


@pytest.mark.parametrize("kwargs, message", [
    (dict(mean=(0.5,), std=(0.5, 0.5)), "one value per channel"),
    (dict(std=(0.2, 0.0, 0.2)), "std must be positive"),
    (dict(value_range=(255, 0)), "high > low"),
    (dict(image_size=(8, 0)), "image_size must be positive"),
    (dict(channel_order="rgba"), "Unknown channel_order 'rgba'"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageNormalization(**kwargs)


def test_config_round_trip_and_saving():
    args = dict(mean=[0.5, 0.4, 0.3], std=[0.1, 0.2, 0.3], value_range=[0.0, 1.0],
                image_size=[4, 6], channel_order="bgr")
    layer = ImageNormalization(**args)
    assert_config_round_trip(layer, args)
    model = keras.Sequential([keras.Input((4, 6, 3)), layer])
    images = np.random.default_rng(2).uniform(size=(2, 4, 6, 3)).astype("float32")
    reloaded = save_and_load_keras(model)  # safe_mode on
    np.testing.assert_allclose(to_numpy(reloaded(images)), to_numpy(model(images)), atol=0)
