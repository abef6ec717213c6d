"""`ViTSegmenter`: shapes of the pyramid, block features, serialisation,
another image size, layer ids, the linear head."""

import numpy as np
import pytest

from keras_ccmim.models import ViTEncoder
from keras_ccmim.models.segmenter import ViTSegmenter, feature_blocks, resized_encoder
from keras_ccmim.models.vit_classifier import layer_ids
from tests.testing_utils import save_and_load_keras, tiny_encoder_config, to_numpy


def test_feature_blocks_are_evenly_spaced():
    assert feature_blocks(12) == [2, 5, 8, 11]
    assert feature_blocks(24) == [5, 11, 17, 23]
    assert feature_blocks(4) == [0, 1, 2, 3]
    assert feature_blocks(2) == [0, 0, 1, 1]
    assert feature_blocks(1) == [0, 0, 0, 0]


def test_block_features_are_the_blocks_outputs():
    encoder = ViTEncoder(**tiny_encoder_config())
    images = np.random.RandomState(0).randn(2, 16, 16, 3).astype("float32")
    first, last, again = encoder.block_features(images, [0, 1, 0])
    assert tuple(first.shape) == (2, 4, 4, 32)
    x = encoder._prepend_cls(encoder.embed(images))
    for index, block in enumerate(encoder.blocks):
        x = block(x)
        expected = to_numpy(x)[:, 1:].reshape(2, 4, 4, 32)
        np.testing.assert_allclose(to_numpy([first, last][index]), expected, atol=1e-5)
    np.testing.assert_array_equal(to_numpy(first), to_numpy(again))
    with pytest.raises(ValueError, match=r"block indices in \[0, 2\)"):
        encoder.block_features(images, [2])


@pytest.fixture(scope="module")
def patch16_model():
    """A segmenter over a patch-16 encoder at 64 px (a 4x4 grid), 4 blocks."""
    encoder = ViTEncoder(**tiny_encoder_config(image_size=64, patch_size=16, num_layers=4,
                                               drop_path_rate=0.1))
    return ViTSegmenter(encoder, num_classes=3, head_dim=8)


def test_pyramid_strides_for_patch_16(patch16_model):
    levels = patch16_model.pyramid(np.zeros((1, 64, 64, 3), "float32"))
    # Strides 4, 8, 16 and 32 of the input.
    assert [tuple(level.shape[1:3]) for level in levels] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [int(level.shape[-1]) for level in levels] == [8, 16, 32, 32]


def test_keras_round_trip_gives_the_same_logits(patch16_model):
    images = np.random.RandomState(1).randn(2, 64, 64, 3).astype("float32")
    logits = to_numpy(patch16_model(images))
    assert logits.shape == (2, 64, 64, 3) and logits.dtype == np.float32
    loaded = save_and_load_keras(patch16_model)
    assert isinstance(loaded, ViTSegmenter) and loaded.feature_layers == [0, 1, 2, 3]
    np.testing.assert_allclose(to_numpy(loaded(images)), logits, atol=1e-5)


def test_another_image_size_keeps_the_weights(patch16_model):
    encoder = patch16_model.encoder
    # 48 px: a 3x3 grid, so the pooled level rounds up to 2x2.
    other = resized_encoder(encoder, image_size=48, drop_path_rate=0.0)
    assert other.image_size == (48, 48) and other.drop_path_rate == 0.0
    for source, target in zip(encoder.weights, other.weights):
        if "position_embedding" not in target.path:
            np.testing.assert_array_equal(to_numpy(source), to_numpy(target))
    assert tuple(other.position_embedding.embedding.shape) == (9, 32)
    model = ViTSegmenter(other, num_classes=2, head_dim=8)
    assert model.level_sizes()[3] == (2, 2)
    assert tuple(model(np.zeros((1, 48, 48, 3), "float32")).shape) == (1, 48, 48, 2)


def test_layer_ids_put_the_head_last():
    model = ViTSegmenter(ViTEncoder(**tiny_encoder_config()), num_classes=2, head_dim=8)
    model.build()
    ids = layer_ids(model)
    assert ids[model.classifier.kernel.path] == 3
    assert ids[model.encoder.cls_token.path] == 0
    assert ids[model.encoder.blocks[1].trainable_variables[0].path] == 2


def test_bad_arguments():
    encoder = ViTEncoder(**tiny_encoder_config())
    with pytest.raises(ValueError, match="background counts"):
        ViTSegmenter(encoder, num_classes=1)
    with pytest.raises(ValueError, match="4 block indices"):
        ViTSegmenter(encoder, num_classes=2, feature_layers=[0, 1])
    with pytest.raises(TypeError, match="ViTEncoder"):
        ViTSegmenter("encoder", num_classes=2)
    with pytest.raises(ValueError, match=r"head must be one of \('fpn', 'linear'\)"):
        ViTSegmenter(encoder, num_classes=2, head="upernet")


def test_linear_head_matches_a_numpy_reference():
    """The linear head: each block used once, normalised without learned
    scale or shift (the last block after the encoder's final norm),
    concatenated, and one linear map per patch laid out on its p x p pixels."""
    encoder = ViTEncoder(**tiny_encoder_config())  # 16 px, patch 4, 32 wide, 2 blocks
    model = ViTSegmenter(encoder, num_classes=3, head="linear")
    model.build()
    assert model.linear_layers == [0, 1]
    assert [v.path for v in model.trainable_variables if "encoder" not in v.path] == [
        model.classifier.kernel.path, model.classifier.bias.path]
    rng = np.random.RandomState(2)
    model.classifier.kernel.assign(rng.randn(1, 1, 64, 4 * 4 * 3).astype("float32"))
    model.classifier.bias.assign(rng.randn(48).astype("float32"))
    images = rng.randn(2, 16, 16, 3).astype("float32")

    def layer_norm(x):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)

    first, last = (to_numpy(f) for f in encoder.block_features(images, [0, 1]))
    last = to_numpy(encoder.norm(last))
    features = np.concatenate([layer_norm(first), layer_norm(last)], -1)  # [2, 4, 4, 64]
    kernel, bias = to_numpy(model.classifier.kernel)[0, 0], to_numpy(model.classifier.bias)
    patch_logits = features @ kernel + bias  # [2, 4, 4, 48]: pixel (i, j) of the patch, class c
    expected = np.zeros((2, 16, 16, 3), "float32")
    for row in range(4):
        for col in range(4):
            block = patch_logits[:, row, col].reshape(2, 4, 4, 3)
            expected[:, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = block
    logits = to_numpy(model(images))
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)
    loaded = save_and_load_keras(model)
    assert loaded.head == "linear"
    np.testing.assert_allclose(to_numpy(loaded(images)), logits, atol=1e-5)
    with pytest.raises(ValueError, match="fpn head"):
        model.pyramid(images)
