"""`init_from`: a run that starts from an encoder or pretrainer preset."""

import keras
import numpy as np
import pytest

from keras_ccmim.models import ViTEncoder
from keras_ccmim.training import ConfigError, PretrainConfig, pretrain
from keras_ccmim.training.pretrain import build_pretrainer, initialise_from
from keras_ccmim.training.config import resolve_config
from tests.training.conftest import TINY_RUN

pytestmark = pytest.mark.slow  # a pretraining run: see the `slow` marker in pyproject.toml

ENCODER = {k: TINY_RUN[k] for k in ("image_size", "patch_size", "hidden_dim", "num_layers",
                                    "num_heads")}


def _numpy(weights):
    return [keras.ops.convert_to_numpy(w) for w in weights]


def _without_position(encoder):
    return _numpy(w for w in encoder.weights if "position_embedding" not in w.path)


def _pretrainer(**overrides):
    config, _ = resolve_config(PretrainConfig(**dict(TINY_RUN, workdir="unused", **overrides)))
    return build_pretrainer(config)


@pytest.fixture
def encoder_preset(tmp_path):
    keras.utils.set_random_seed(5)
    encoder = ViTEncoder(**ENCODER)
    encoder.build()
    return encoder, encoder.save_to_preset(str(tmp_path / "encoder_preset"))


@pytest.mark.parametrize("image_size", [16, 24])
def test_an_encoder_preset_initialises_the_encoder_at_any_image_size(encoder_preset, image_size):
    encoder, preset = encoder_preset
    model = _pretrainer(image_size=image_size)
    decoder_before = _numpy(model.decoder.weights)
    initialise_from(model, preset)
    for got, want in zip(_without_position(model.encoder), _without_position(encoder)):
        np.testing.assert_array_equal(got, want)
    grid = image_size // ENCODER["patch_size"]
    assert model.encoder.position_embedding.embedding.shape == (grid * grid, ENCODER["hidden_dim"])
    for got, want in zip(_numpy(model.decoder.weights), decoder_before):
        np.testing.assert_array_equal(got, want)  # an encoder preset leaves the decoder alone


def test_a_pretrainer_preset_initialises_the_decoder_too(tmp_path):
    from keras_ccmim.models.preset_files import save_to_preset

    keras.utils.set_random_seed(6)
    source = _pretrainer()
    save_to_preset(source, str(tmp_path / "pretrainer"))
    model = _pretrainer()
    initialise_from(model, str(tmp_path / "pretrainer"))
    for part in ("encoder", "decoder", "projector"):
        for got, want in zip(_numpy(getattr(model, part).weights),
                             _numpy(getattr(source, part).weights)):
            np.testing.assert_array_equal(got, want)


def test_another_architecture_is_refused_naming_the_fields(encoder_preset):
    _, preset = encoder_preset
    model = _pretrainer(hidden_dim=64, num_heads=4, projection_dim=16)
    with pytest.raises(ConfigError, match=r"hidden_dim: 32 -> 64; num_heads: 2 -> 4"):
        initialise_from(model, preset)
    with pytest.raises(ConfigError, match="cannot be read"):
        initialise_from(model, "no/such/preset")


def test_a_run_from_a_preset_starts_at_its_weights(encoder_preset, tiny_run, library_messages):
    encoder, preset = encoder_preset
    # One step at a negligible learning rate: the final encoder is the preset's.
    results = pretrain(tiny_run(init_from=preset, epochs=1, steps_per_epoch=1, blr=1e-12,
                                warmup_epochs=0))
    assert f"Initialised the encoder from {preset}" in library_messages.read()
    trained = ViTEncoder.from_preset(results.paths["encoder"])
    for got, want in zip(_without_position(trained), _without_position(encoder)):
        np.testing.assert_allclose(got, want, atol=1e-6)
