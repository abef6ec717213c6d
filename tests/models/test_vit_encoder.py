import json
import os
import subprocess
import sys

import numpy as np
import pytest
from keras import ops

from keras_ccmim.layers.position_embedding import sincos_2d_position_embedding
from keras_ccmim.models import ViTEncoder, get_preset, preset_names
from tests.testing_utils import (
    assert_config_round_trip,
    serialization_round_trip,
    tiny_encoder_config,
    to_numpy,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_output_shape_and_subset_encoding():
    encoder = ViTEncoder(**tiny_encoder_config())
    images = np.random.RandomState(0).randn(3, 16, 16, 3).astype("float32")
    assert tuple(encoder(images).shape) == (3, 17, 32)
    tokens = encoder.embed(images)
    ids = np.array([[0, 5, 9], [15, 1, 2], [3, 3, 4]], "int32")
    gathered = np.take_along_axis(to_numpy(tokens), ids[..., None], axis=1)
    np.testing.assert_allclose(
        to_numpy(encoder.encode(tokens, ids)), to_numpy(encoder.encode(ops.convert_to_tensor(gathered))),
        rtol=1e-5, atol=1e-5,
    )


def test_position_is_added_before_tokens_are_dropped():
    encoder = ViTEncoder(**tiny_encoder_config())
    images = np.random.RandomState(1).randn(1, 16, 16, 3).astype("float32")
    # Swapping two patch tokens changes the encoding of the subset (positions travel with tokens).
    tokens = encoder.embed(images)
    a = to_numpy(encoder.encode(tokens, np.array([[0, 1]], "int32")))
    b = to_numpy(encoder.encode(tokens, np.array([[1, 0]], "int32")))
    np.testing.assert_allclose(a[0, 0], b[0, 0], rtol=1e-4, atol=1e-5)  # [CLS] is order-free
    np.testing.assert_allclose(a[0, 1], b[0, 2], rtol=1e-4, atol=1e-5)


def vit_parameter_count(image, patch, d, depth, mlp_ratio=4, channels=3):
    per_block = 4 * d * d + 4 * d + 2 * mlp_ratio * d * d + mlp_ratio * d + d + 4 * d
    return patch * patch * channels * d + d + d + depth * per_block + 2 * d


def test_tiny_preset_parameter_count():
    encoder = ViTEncoder.from_architecture("vit_tiny_patch4_32")
    encoder.build()
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    assert trainable == vit_parameter_count(32, 4, 192, 12)
    assert encoder.count_params() - trainable == 64 * 192  # the fixed position table
    assert encoder.grid_size == (8, 8)


def test_presets_and_errors():
    assert set(preset_names()) == {
        "vit_tiny_patch4_32", "vit_small_patch16_224", "vit_base_patch16_224",
        "vit_large_patch16_224", "vit_huge_patch14_224",
    }
    assert get_preset("B/16")["encoder"]["hidden_dim"] == 768
    assert get_preset("vit_huge_patch14_224")["encoder"]["patch_size"] == 14
    with pytest.raises(ValueError, match="Valid presets: vit_base_patch16_224"):
        get_preset("vit_giant")
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        ViTEncoder(30, 4, 32, 1, 2)


def test_config_round_trip():
    args = dict(tiny_encoder_config(), mlp_ratio=2.0, num_channels=1, qkv_bias=False,
                drop_path_rate=0.1, layer_scale_init_value=0.1, layer_norm_epsilon=1e-5, seed=4,
                pooling="mean")
    encoder = ViTEncoder(**args)
    args["image_size"] = [16, 16]
    assert_config_round_trip(encoder, args)
    assert serialization_round_trip(encoder).get_config() == encoder.get_config()


_WRITER = """
import os, sys, numpy as np
os.environ["KERAS_BACKEND"] = sys.argv[1]
import keras
from keras_ccmim.models import ViTEncoder
keras.utils.set_random_seed(int(sys.argv[3]))
enc = ViTEncoder(image_size=16, patch_size=4, hidden_dim=32, num_layers=2, num_heads=2)
images = np.random.RandomState(0).randn(2, 16, 16, 3).astype("float32")
features = keras.ops.convert_to_numpy(enc(images))
enc.save_weights(os.path.join(sys.argv[2], "encoder.weights.h5"))
np.save(os.path.join(sys.argv[2], "features.npy"), features)
"""


@pytest.mark.parametrize("source", ["tensorflow", "jax", "torch"])
def test_encoder_weights_load_across_backends(source, tmp_path):
    """Weights saved by `source` load here and give the same features."""
    import keras

    env = dict(os.environ, KERAS_BACKEND=source, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-c", _WRITER, source, str(tmp_path), "3"],
                   check=True, env=env, capture_output=True)
    keras.utils.set_random_seed(99)  # different init here: the weights must come from the file
    encoder = ViTEncoder(**tiny_encoder_config())
    encoder.build()
    encoder.load_weights(str(tmp_path / "encoder.weights.h5"))
    images = np.random.RandomState(0).randn(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(to_numpy(encoder(images)), np.load(tmp_path / "features.npy"), atol=1e-4)


def test_weights_saved_at_one_image_size_load_at_another(tmp_path):
    """The sin-cos table is recomputed for the loading encoder's grid; the
    other weights do not depend on the size."""
    import keras

    config = tiny_encoder_config()  # 16 px
    saved = ViTEncoder(**config)
    saved.build()
    path = str(tmp_path / "encoder.weights.h5")
    saved.save_weights(path)
    images = np.random.RandomState(0).randn(2, 32, 32, 3).astype("float32")

    keras.utils.set_random_seed(99)  # a different init: the weights come from the file
    same = ViTEncoder(**config)
    same.build()
    same.load_weights(path)
    np.testing.assert_array_equal(to_numpy(same(images[:, :16, :16])),
                                  to_numpy(saved(images[:, :16, :16])))

    larger = ViTEncoder(**dict(config, image_size=32))
    larger.build()
    larger.load_weights(path)
    features = to_numpy(larger(images))
    assert features.shape == (2, 1 + 64, config["hidden_dim"]) and np.all(np.isfinite(features))
    expected_table = sincos_2d_position_embedding((8, 8), config["hidden_dim"])
    np.testing.assert_allclose(to_numpy(larger.position_embedding.embedding), expected_table)
    others = [w for w in larger.weights if w is not larger.position_embedding.embedding]
    expected = [w for w in saved.weights if w is not saved.position_embedding.embedding]
    assert len(others) == len(expected) == len(saved.weights) - 1
    for a, b in zip(others, expected):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


# --- Size checks, pooling, architectures and presets in a user's hands. ---

def test_another_image_size_is_one_clear_error():
    import keras

    encoder = ViTEncoder(**tiny_encoder_config())  # 16 px
    fix = r"ViTEncoder.from_preset\(preset, image_size=\(32, 24\)\)"
    with pytest.raises(ValueError, match=rf"takes 16x16 images, got 32x24\. .*{fix}"):
        encoder(np.zeros((1, 32, 24, 3), "float32"))
    with pytest.raises(ValueError, match="takes 16x16 images, got 32x32"):
        encoder(keras.Input((32, 32, 3)))  # a symbolic call: a model built around it
    with pytest.raises(ValueError, match="takes 16x16 images, got 16x32"):
        encoder.embed(np.zeros((1, 16, 32, 3), "float32"))  # the pretrainer's stage
    with pytest.raises(ValueError, match="with 3 channels, got 1"):
        encoder(np.zeros((1, 16, 16, 1), "float32"))


@pytest.mark.parametrize("pooling", [None, "cls", "mean"])
def test_pooling(pooling):
    tokens_encoder = ViTEncoder(**tiny_encoder_config(), seed=1)
    tokens_encoder.build()
    encoder = ViTEncoder(**tiny_encoder_config(pooling=pooling), seed=1)
    encoder.build()
    encoder.set_weights(tokens_encoder.get_weights())
    images = np.random.RandomState(2).randn(3, 16, 16, 3).astype("float32")
    tokens = to_numpy(tokens_encoder(images))
    want = {None: tokens, "cls": tokens[:, 0], "mean": tokens[:, 1:].mean(axis=1)}[pooling]
    got = to_numpy(encoder(images))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert tuple(encoder.compute_output_shape((3, 16, 16, 3))) == got.shape
    # The stages (what the pretrainer runs) do not pool.
    np.testing.assert_array_equal(to_numpy(encoder.encode(encoder.embed(images))),
                                  to_numpy(tokens_encoder.encode(tokens_encoder.embed(images))))


def test_pooling_leaves_pretraining_unchanged():
    from tests.testing_utils import tiny_pretrainer

    images = np.random.RandomState(3).randn(2, 16, 16, 3).astype("float32")
    outputs = []
    for pooling in (None, "mean"):
        model = tiny_pretrainer(encoder_overrides={"pooling": pooling})
        model.build()
        if outputs:
            model.set_weights(weights)
        weights = model.get_weights()
        outputs.append({k: to_numpy(v) for k, v in model(images, training=True).items()})
    assert outputs[0].keys() == outputs[1].keys()
    for name in outputs[0]:
        np.testing.assert_array_equal(outputs[1][name], outputs[0][name], err_msg=name)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="Unknown pooling 'max'"):
        ViTEncoder(**tiny_encoder_config(pooling="max"))


def test_sequential_with_a_pooled_encoder_reloads_with_safe_mode(tmp_path):
    import keras

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        ViTEncoder(**tiny_encoder_config(pooling="mean")),
        keras.layers.Dense(10),
    ])
    images = np.random.RandomState(4).randn(2, 16, 16, 3).astype("float32")
    path = str(tmp_path / "classifier.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert reloaded.layers[0].pooling == "mean"
    assert tuple(reloaded.output_shape) == (None, 10)
    np.testing.assert_array_equal(to_numpy(reloaded(images)), to_numpy(model(images)))


def test_architecture_names_need_from_architecture(tmp_path):
    from keras_ccmim.models import CCMIMPretrainer

    encoder = ViTEncoder.from_architecture("B/16", num_layers=1, image_size=32)
    assert (encoder.hidden_dim, encoder.patch_size, encoder.num_layers) == (768, 16, 1)
    for name in ("vit_tiny_patch4_32", "B/16"):
        with pytest.raises(ValueError, match=rf"architecture name.*ViTEncoder\.from_architecture"):
            ViTEncoder.from_preset(name)
        with pytest.raises(ValueError, match=r"CCMIMPretrainer\.from_architecture"):
            CCMIMPretrainer.from_preset(name)
    # A preset folder that happens to have such a name is a preset.
    folder_encoder = ViTEncoder(**tiny_encoder_config())
    folder_encoder.build()
    folder_encoder.save_to_preset(str(tmp_path / "vit_tiny_patch4_32"))
    os.chdir(tmp_path)
    try:
        assert ViTEncoder.from_preset("vit_tiny_patch4_32").image_size == (16, 16)
    finally:
        os.chdir(REPO)


@pytest.fixture
def preset(tmp_path):
    encoder = ViTEncoder(**tiny_encoder_config(), seed=5)
    encoder.build()
    return encoder, encoder.save_to_preset(str(tmp_path / "preset"))


def test_preset_records_the_input_contract(preset):
    _, folder = preset
    with open(os.path.join(folder, "preprocessing.json")) as f:
        recorded = json.load(f)
    assert recorded["class_name"] == "ImageNormalization"
    config = recorded["config"]
    assert config["mean"] == [0.485, 0.456, 0.406] and config["std"] == [0.229, 0.224, 0.225]
    assert config["value_range"] == [0, 255] and config["channel_order"] == "rgb"
    assert config["image_size"] == [16, 16]


@pytest.mark.parametrize("pooling", [None, "mean"])
def test_from_preset_attaches_the_preprocessing(preset, pooling):
    encoder, folder = preset
    model = ViTEncoder.from_preset(folder, preprocessing=True, pooling=pooling)
    pixels = np.random.RandomState(6).randint(0, 256, size=(3, 16, 16, 3)).astype("uint8")
    normalised = (pixels / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225])
    tokens = to_numpy(encoder(normalised.astype("float32")))
    want = tokens if pooling is None else tokens[:, 1:].mean(axis=1)
    np.testing.assert_allclose(to_numpy(model(pixels)), want, rtol=1e-5, atol=2e-5)
    with pytest.raises(ValueError, match=r"takes 16x16 images, got 32x32"):
        model(np.zeros((1, 32, 32, 3), "uint8"))
    # At another image size the preprocessing follows the encoder.
    larger = ViTEncoder.from_preset(folder, preprocessing=True, image_size=32)
    assert larger.layers[0].image_size == (32, 32) == larger.layers[1].image_size
    assert tuple(larger(np.zeros((1, 32, 32, 3), "uint8")).shape) == (1, 65, 32)


def test_a_preset_without_preprocessing_gets_the_package_contract(preset, caplog):
    from keras_ccmim.models import load_preprocessing

    _, folder = preset
    os.remove(os.path.join(folder, "preprocessing.json"))
    with caplog.at_level("WARNING"):
        layer = load_preprocessing(folder)
    assert "records no preprocessing.json" in caplog.text
    assert (layer.mean, layer.std, layer.value_range) == (
        (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (0.0, 255.0))


def test_a_damaged_preprocessing_file_is_one_clear_error(preset):
    from keras_ccmim.models import load_preprocessing

    _, folder = preset
    with open(os.path.join(folder, "preprocessing.json"), "w") as f:
        json.dump({"class_name": "Lambda", "config": {}}, f)
    with pytest.raises(ValueError, match=r"Cannot read .*preprocessing\.json"):
        load_preprocessing(folder)
