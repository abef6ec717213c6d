"""SavedModel export: plain `tf.saved_model.load` matches the in-memory encoder."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import make_dataset, normalize
from keras_ccmim.evaluation import (
    EncoderFeatures,
    export_saved_model,
    extract_features,
    extract_saved_model_features,
)
from tests.testing_utils import to_numpy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from keras_ccmim.evaluation import random_encoder
    from tests.evaluation.conftest import TINY_ENCODER

    encoder = random_encoder(seed=3, **TINY_ENCODER)
    path = export_saved_model(encoder, str(tmp_path_factory.mktemp("export") / "saved_model"))
    return encoder, path


def test_float_and_uint8_endpoints_match_the_encoder(exported):
    encoder, path = exported
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 16, 16, 3)).astype("uint8")
    tokens = to_numpy(encoder(normalize(pixels).numpy()))
    want = {"cls": tokens[:, 0], "mean_patch": tokens[:, 1:].mean(1), "patch_tokens": tokens[:, 1:]}

    from_float = loaded.serve(tf.constant(pixels.astype("float32") / 255.0))
    from_uint8 = loaded.signatures["serve_uint8"](images=tf.constant(pixels))
    default = loaded.signatures["serving_default"](images=tf.constant(pixels / 255.0, tf.float32))
    for outputs in (from_float, from_uint8, default):
        assert set(outputs) == set(want)
        for name, value in want.items():
            np.testing.assert_allclose(outputs[name].numpy(), value, atol=1e-5, rtol=0)
    assert from_float["patch_tokens"].shape == (5, 16, 32)


def test_batch_size_is_free_and_image_size_fixed(exported):
    _, path = exported
    loaded = tf.saved_model.load(path)
    assert loaded.serve(tf.zeros((1, 16, 16, 3)))["cls"].shape == (1, 32)
    assert loaded.serve(tf.zeros((7, 16, 16, 3)))["cls"].shape == (7, 32)
    with pytest.raises((ValueError, TypeError)):
        loaded.serve(tf.zeros((1, 32, 32, 3)))


def test_saved_model_features_match_encoder_features(exported):
    encoder, path = exported
    dataset = make_dataset(
        "synthetic_objects", split="test", batch_size=8, image_size=16, training=False,
        num_images=16,
    )
    want, want_labels = extract_features(encoder, dataset, "cls")
    got, labels = extract_saved_model_features(path, dataset, "cls")
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unit_features_model_is_what_is_exported(exported):
    encoder, path = exported
    images = np.random.default_rng(2).uniform(size=(2, 16, 16, 3)).astype("float32")
    want = to_numpy(EncoderFeatures(encoder, input_format="unit")(images)["mean_patch"])
    loaded = tf.saved_model.load(path)  # keep it: its variables die with it
    got = loaded.serve(tf.constant(images))["mean_patch"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bad_arguments(exported, tmp_path):
    encoder, _ = exported
    with pytest.raises(TypeError, match="ViTEncoder"):
        export_saved_model("encoder", str(tmp_path / "x"))
    with pytest.raises(ValueError, match="Unknown method 'onnx'"):
        export_saved_model(encoder, str(tmp_path / "x"), method="onnx")
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="tensorflow_subprocess"):
            export_saved_model(encoder, str(tmp_path / "x"), method="archive")
