"""Frozen features from an encoder and from its SavedModel."""

import numpy as np
import pytest

from keras_ccmim.data import make_dataset
from keras_ccmim.evaluation import EncoderFeatures, extract_features
from tests.testing_utils import to_numpy


def tiny_dataset(num_images=24, batch_size=8):
    return make_dataset(
        "synthetic_objects", split="test", batch_size=batch_size, image_size=16,
        training=False, num_images=num_images,
    )


def test_features_are_pooled_encoder_outputs(tiny_encoder):
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype("float32")
    outputs = EncoderFeatures(tiny_encoder)(images)
    tokens = to_numpy(tiny_encoder(images))
    np.testing.assert_allclose(to_numpy(outputs["cls"]), tokens[:, 0], atol=1e-6)
    np.testing.assert_allclose(to_numpy(outputs["mean_patch"]), tokens[:, 1:].mean(1), atol=1e-6)
    np.testing.assert_allclose(to_numpy(outputs["patch_tokens"]), tokens[:, 1:], atol=1e-6)


def test_unit_input_is_normalised_inside(tiny_encoder):
    from keras_ccmim.data import normalize

    pixels = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16, 3)).astype("uint8")
    want = to_numpy(tiny_encoder(normalize(pixels).numpy()))[:, 0]
    unit = EncoderFeatures(tiny_encoder, input_format="unit", names=("cls",))
    np.testing.assert_allclose(to_numpy(unit(pixels)["cls"]), want, atol=1e-5)
    np.testing.assert_allclose(
        to_numpy(unit(pixels.astype("float32") / 255.0)["cls"]), want, atol=1e-5
    )


@pytest.mark.parametrize("feature", ["mean_patch", "cls"])
def test_extract_features_keeps_dataset_order(tiny_encoder, feature):
    features, labels = extract_features(tiny_encoder, tiny_dataset(), feature)
    assert features.shape == (24, 32) and features.dtype == np.float32
    images, extras = zip(*[(x.numpy(), e["label"].numpy()) for x, e in tiny_dataset()])
    np.testing.assert_array_equal(labels, np.concatenate(extras))
    want = to_numpy(EncoderFeatures(tiny_encoder)(np.concatenate(images))[feature])
    np.testing.assert_allclose(features, want, atol=1e-5)


def test_max_batches_and_bad_arguments(tiny_encoder):
    features, labels = extract_features(tiny_encoder, tiny_dataset(), max_batches=2)
    assert features.shape == (16, 32) and labels.shape == (16,)
    with pytest.raises(ValueError, match="Unknown feature 'avg'"):
        extract_features(tiny_encoder, tiny_dataset(), "avg")
    with pytest.raises(ValueError, match="input_format"):
        EncoderFeatures(tiny_encoder, input_format="bgr")
    with pytest.raises(TypeError, match="ViTEncoder"):
        EncoderFeatures("encoder")
