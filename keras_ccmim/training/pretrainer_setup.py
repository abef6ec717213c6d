"""The model of a pretraining run: `build_pretrainer(config)` and
`initialise_from`, which starts it from a preset or another run's encoder."""

import json
import logging
import os

from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.presets import ENCODER_SIZE_FIELDS
from keras_ccmim.training.config import ConfigError

logger = logging.getLogger(__name__)


def build_pretrainer(config):
    """The `CCMIMPretrainer` of a resolved `PretrainConfig`, built."""
    encoder_overrides = {field: getattr(config, field) for field in ENCODER_SIZE_FIELDS}
    encoder_overrides["seed"] = config.seed
    model = CCMIMPretrainer.from_architecture(
        config.preset,
        encoder_overrides=encoder_overrides,
        decoder_hidden_dim=config.decoder_hidden_dim,
        decoder_num_layers=config.decoder_num_layers,
        decoder_num_heads=config.decoder_num_heads,
        mask_ratio=config.mask_ratio,
        masking=config.masking,
        sampler=config.sampler,
        sampling_temperature=config.sampling_temperature,
        sampling_temperature_start=config.sampling_temperature_start,
        sampling_temperature_steps=config.temperature_schedule_steps,
        score_layers=config.score_layers,
        score_from=config.score_from,
        contrastive=config.contrastive,
        contrastive_weight=config.contrastive_weight,
        temperature=config.temperature,
        projection_dim=config.projection_dim,
        norm_pix_loss=config.norm_pix_loss,
        seed=config.seed,
    )
    model.build()
    return model


def initialise_from(model, source):
    """Sets the weights of `model` (a built `CCMIMPretrainer`) from a
    preset or a pretraining workdir: a `ViTEncoder` preset gives the
    encoder; a `CCMIMPretrainer` preset (a converted `mae_visualize_*` or
    ccMIM checkpoint, `tools/convert_mae.py`) gives every layer whose
    weights have the run's shapes (encoder and decoder, the ccMIM heads
    when the run has them), the rest keeping their initial values. A
    checkpointed run resumes from its checkpoint, which overrides this.

    Raises:
        ConfigError: the source's encoder has another architecture (the
            image size may differ: the position table is recomputed).
    """
    from keras_ccmim.models.preset_files import (
        CONFIG_FILE,
        ENCODER_PRESET,
        is_preset_dir,
        load_from_preset,
        resolve_preset,
    )
    from keras_ccmim.models.vit_encoder import ViTEncoder

    try:
        folder = resolve_preset(source)
        if not is_preset_dir(folder) and is_preset_dir(os.path.join(folder, ENCODER_PRESET)):
            folder = os.path.join(folder, ENCODER_PRESET)  # a pretraining workdir
        with open(os.path.join(folder, CONFIG_FILE)) as f:
            class_name = json.load(f).get("class_name")
        if class_name == "CCMIMPretrainer":
            pretrainer = load_from_preset(folder, CCMIMPretrainer)
            loaded = pretrainer.encoder
        else:
            pretrainer, loaded = None, load_from_preset(folder, ViTEncoder)
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(
            f"init_from={source!r} cannot be read: {error} Pass a preset folder (config.json, "
            "model.weights.h5, metadata.json), a kaggle:// or hf:// handle, or a pretraining "
            "workdir."
        ) from error
    encoder = model.encoder
    mismatched = [
        f"{field}: {getattr(loaded, field)!r} -> {getattr(encoder, field)!r}"
        for field in ("patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio",
                      "num_channels", "qkv_bias")
        if getattr(loaded, field) != getattr(encoder, field)
    ]
    if mismatched:
        raise ConfigError(
            f"init_from={source!r} holds an encoder of another architecture than the run's "
            f"({'; '.join(mismatched)}). Pass the matching --preset and size flags (e.g. "
            "--preset=vit_base_patch16_224 for a converted MAE ViT-B), or another init_from."
        )
    if not _copy_matching(encoder, loaded, skip_position=True):
        raise ConfigError(
            f"init_from={source!r}: its encoder's weights do not have the run's shapes although "
            "its architecture fields match; it was written by another version."
        )
    copied = ["encoder"]
    if pretrainer is not None:
        for name in ("decoder", "projector", "predictor"):
            target, origin = getattr(model, name, None), getattr(pretrainer, name, None)
            if target is not None and origin is not None and _copy_matching(
                target, origin, skip_position=True
            ):
                copied.append(name)
    logger.info(f"Initialised the {', '.join(copied)} from {source}.")


def _copy_matching(target, origin, skip_position=False):
    """Copies `origin`'s weights into `target` when both have the same
    weights in the same shapes (the position tables, recomputed per grid,
    excepted with `skip_position`); returns whether it copied."""
    pairs = list(zip(target.weights, origin.weights))
    if len(target.weights) != len(origin.weights) or any(
        tuple(a.shape) != tuple(b.shape) for a, b in pairs
        if not (skip_position and "position_embedding" in a.path)
    ):
        return False
    for a, b in pairs:
        if skip_position and "position_embedding" in a.path:
            continue
        a.assign(b.value)
    return True
