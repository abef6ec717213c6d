"""The checks `resolve_config` runs on a `PretrainConfig`, field by field.

Each `_check_*` raises a `ValueError` naming the field, the bad value and the
fix, and fills the fields left to the preset (`_check_model`) or the data
(`_check_data`). `check_and_fill(config)` runs them all, in place.
"""

import math
import numbers
import os

from keras_ccmim.file_errors import nearest_existing
from keras_ccmim.layers.importance_scorer import SCORE_SOURCES, resolve_score_layers
from keras_ccmim.layers.patch_selector import MASKING_STRATEGIES, SAMPLERS
from keras_ccmim.losses import CONTRASTIVE_LOSSES
from keras_ccmim.models.presets import ENCODER_SIZE_FIELDS as ENCODER_FIELDS
from keras_ccmim.models.presets import get_preset
from keras_ccmim.training.distribution import plan_distribution, process_count

DECODER_FIELDS = {
    "decoder_hidden_dim": "hidden_dim",
    "decoder_num_layers": "num_layers",
    "decoder_num_heads": "num_heads",
}
# Images of `synthetic_objects` generated when num_images is None: the demo's
# size (the data package's own default is 10,000).
DEMO_SYNTHETIC_IMAGES = 3072
# The workdir file with the scan of a `folder:` dataset (see
# `keras_ccmim.data.write_dataset_manifest`); a resumed run reuses it.
FOLDER_MANIFEST_FILE = "image_folder_manifest.json"
# Fields a rerun on a workdir that holds a checkpointed run may change


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def _is_finite_number(value):
    return (
        isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    )


def _check_positive(name, value, hint=""):
    if not _is_finite_number(value) or not value > 0:
        raise ValueError(f"{name} must be a positive number (finite), got {value!r}.{hint}")


def _check_non_negative(name, value, hint=""):
    if not _is_finite_number(value) or not value >= 0:
        raise ValueError(f"{name} must be >= 0 (a finite number), got {value!r}.{hint}")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")


def parse_score_layers(value):
    """`"all"`, `"last"`, a list of ints, or a string of comma-separated ints."""
    if isinstance(value, str) and value not in ("all", "last"):
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"score_layers must be 'all', 'last' or comma-separated block "
                f"indices such as '3,5', got {value!r}."
            ) from None
    return value


def _check_model(config):
    preset = get_preset(config.preset)
    encoder, decoder = preset["encoder"], preset["decoder"]
    for field in ENCODER_FIELDS:
        if getattr(config, field) is None:
            setattr(config, field, encoder[field])
        _check_int(field, getattr(config, field), 1)
    for field, key in DECODER_FIELDS.items():
        if getattr(config, field) is None:
            setattr(config, field, decoder[key])
        _check_int(field, getattr(config, field), 1)
    if config.image_size % config.patch_size:
        multiple = max(config.image_size // config.patch_size, 1) * config.patch_size
        raise ValueError(
            f"image_size {config.image_size} is not divisible by patch_size "
            f"{config.patch_size}. Use an image size that is a multiple of the patch "
            f"size (e.g. {multiple}) or another patch size."
        )
    if config.hidden_dim % config.num_heads or config.hidden_dim % 4:
        raise ValueError(
            f"hidden_dim {config.hidden_dim} must be divisible by num_heads "
            f"({config.num_heads}) and by 4 (sin-cos position embedding)."
        )
    if config.decoder_hidden_dim % config.decoder_num_heads or config.decoder_hidden_dim % 4:
        raise ValueError(
            f"decoder_hidden_dim {config.decoder_hidden_dim} must be divisible by "
            f"decoder_num_heads ({config.decoder_num_heads}) and by 4."
        )


def _check_ccmim(config):
    if not _is_finite_number(config.mask_ratio) or not 0.0 < config.mask_ratio < 1.0:
        raise ValueError(
            f"mask_ratio must be strictly between 0 and 1, got {config.mask_ratio!r} "
            "(ccMIM and MAE use 0.75)."
        )
    _check_choice("masking", config.masking, MASKING_STRATEGIES)
    _check_choice("sampler", config.sampler, SAMPLERS)
    _check_choice("contrastive", config.contrastive, CONTRASTIVE_LOSSES)
    _check_positive("sampling_temperature", config.sampling_temperature)
    if config.sampling_temperature_start is not None:
        _check_positive("sampling_temperature_start", config.sampling_temperature_start)
        if config.masking != "importance_sampling":
            raise ValueError(
                f"sampling_temperature_start anneals importance sampling, but masking is "
                f"{config.masking!r}. Use masking='importance_sampling' or leave "
                "sampling_temperature_start unset."
            )
    _check_int("sampling_temperature_steps", config.sampling_temperature_steps, 1, allow_none=True)
    _check_choice("score_from", config.score_from, SCORE_SOURCES)
    _check_positive("temperature", config.temperature, " (ccMIM uses 0.5.)")
    _check_non_negative(
        "contrastive_weight",
        config.contrastive_weight,
        " (ccMIM uses 0.2; 0 trains the reconstruction alone.)",
    )
    _check_int("projection_dim", config.projection_dim, 1)
    config.score_layers = parse_score_layers(config.score_layers)
    resolve_score_layers(config.score_layers, config.num_layers)


def _check_training(config):
    _check_int("batch_size", config.batch_size, 1)
    _check_int("accum_steps", config.accum_steps, 1)
    _check_int("num_processes", config.num_processes, 1, allow_none=True)
    _check_int("process_id", config.process_id, 0, allow_none=True)
    if config.coordinator_address is not None and (
        not isinstance(config.coordinator_address, str) or ":" not in config.coordinator_address
    ):
        raise ValueError(
            f"coordinator_address must be 'host:port' of process 0, got "
            f"{config.coordinator_address!r}."
        )
    if config.steps_per_epoch is not None and config.steps_per_epoch % config.accum_steps:
        raise ValueError(
            f"steps_per_epoch {config.steps_per_epoch} is not a multiple of accum_steps "
            f"{config.accum_steps}: an epoch would end inside an accumulation. Use a "
            f"multiple of {config.accum_steps}."
        )
    _check_int("epochs", config.epochs, 1)
    _check_int("steps_per_epoch", config.steps_per_epoch, 1, allow_none=True)
    _check_int("num_images", config.num_images, 1, allow_none=True)
    _check_int("seed", config.seed, 0)
    _check_int("checkpoint_every_steps", config.checkpoint_every_steps, 0)
    _check_int("keep_checkpoints", config.keep_checkpoints, 1)
    _check_int("tensorboard_every_steps", config.tensorboard_every_steps, 0)
    _check_int("check_every_steps", config.check_every_steps, 1)
    _check_int("lift_images", config.lift_images, 1)
    for name in ("fresh", "allow_config_change"):
        if not isinstance(getattr(config, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(config, name)!r}.")
    _check_int("resume_from_step", config.resume_from_step, 1, allow_none=True)
    if config.init_from is not None and (not isinstance(config.init_from, str) or not config.init_from):
        raise ValueError(
            f"init_from must be a preset (a folder, kaggle:// or hf:// handle) or a pretraining "
            f"workdir, got {config.init_from!r}."
        )
    if config.fresh and config.resume_from_step is not None:
        raise ValueError(
            "fresh and resume_from_step contradict each other: fresh starts the run over, "
            "resume_from_step trains on from one of its checkpoints. Pass one of them."
        )
    _check_positive("blr", config.blr, " (MAE and ccMIM use 1.5e-4.)")
    _check_non_negative("weight_decay", config.weight_decay, " (MAE and ccMIM use 0.05.)")
    if not _is_finite_number(config.warmup_epochs) or not (
        0 <= config.warmup_epochs < config.epochs
    ):
        raise ValueError(
            f"warmup_epochs must be >= 0 and smaller than epochs ({config.epochs}), "
            f"got {config.warmup_epochs!r}."
        )
    _check_choice("mixed_precision", config.mixed_precision, ("float32", "bfloat16"))
    _, devices = plan_distribution(config.distribution)
    if config.batch_size % max(len(devices), 1):
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the {len(devices)} "
            f"devices of distribution={config.distribution!r} (all processes together). "
            f"Use a multiple of {len(devices)}."
        )
    processes = process_count()
    if config.batch_size % processes:
        raise ValueError(
            f"batch_size {config.batch_size} (the global batch) is not divisible by the "
            f"{processes} processes, which feed equal shares. Use a multiple of {processes}."
        )
    if config.jit_compile not in ("auto", True, False):
        raise ValueError(f"jit_compile must be 'auto', True or False, got {config.jit_compile!r}.")
    if config.workdir is None:
        raise ValueError(
            "workdir is not set: pass --workdir=<folder of the run> (workdir=... in "
            "Python), or a recipe that sets it (--config=configs/demo.py)."
        )
    if not isinstance(config.workdir, (str, os.PathLike)) or not os.fspath(config.workdir):
        raise ValueError(f"workdir must be a folder path, got {config.workdir!r}.")
    _check_workdir_location(os.fspath(config.workdir))


def _check_workdir_location(workdir):
    """The workdir is a folder, or can be created as one, and is writable."""
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise ValueError(
            f"workdir {workdir!r} is a file, not a folder. Pass a folder path (a new one "
            "starts a new run)."
        )
    existing = nearest_existing(os.path.abspath(workdir))
    if not os.path.isdir(existing):
        raise ValueError(
            f"workdir {workdir!r} cannot be created: {existing!r} is a file, not a folder. "
            "Pass a workdir whose parents are folders."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"workdir {workdir!r} is not writable: {existing!r} is read-only (its "
            "permissions or a read-only file system). Pass a workdir in a writable "
            "location."
        )


def _check_data(config):
    from keras_ccmim import data

    if config.dataset == "synthetic_objects" and config.data_dir is not None:
        raise ValueError(
            "synthetic_objects is generated, not read: leave data_dir unset (data_dir "
            "is the folder of prepared TFDS datasets)."
        )
    if config.data_dir is not None and not os.path.isdir(config.data_dir):
        raise ValueError(
            f"data_dir {config.data_dir!r} does not exist. Pass "
            "--data_dir=<folder holding the prepared TFDS datasets> (data_dir=... in "
            "Python)."
        )
    if config.num_images is None and config.dataset == "synthetic_objects":
        config.num_images = DEMO_SYNTHETIC_IMAGES
    # An image folder an earlier call on this workdir scanned is not decoded
    # again while unchanged (only read here; `pretrain` writes it).
    data.read_dataset_manifest(
        config.dataset, os.path.join(os.fspath(config.workdir), FOLDER_MANIFEST_FILE)
    )
    info = data.describe_dataset(
        config.dataset,
        split=config.split,
        data_dir=config.data_dir,
        num_images=config.num_images,
        image_size=config.image_size,
    )
    if info.num_images is not None and info.num_images < config.batch_size:
        raise ValueError(
            f"Split {config.split!r} of {config.dataset!r} has {info.num_images} images, "
            f"fewer than batch_size={config.batch_size}. Use a smaller batch_size or a "
            "larger split."
        )
    if config.steps_per_epoch is None:
        if info.num_images is None:
            raise ValueError(
                f"The size of {config.dataset!r} split {config.split!r} is unknown; "
                "set steps_per_epoch."
            )
        steps = info.num_images // config.batch_size
        config.steps_per_epoch = steps - steps % config.accum_steps
        if not config.steps_per_epoch:
            raise ValueError(
                f"One pass over {config.dataset!r} split {config.split!r} is {steps} "
                f"step(s) of batch {config.batch_size}, fewer than accum_steps="
                f"{config.accum_steps}. Set steps_per_epoch or lower accum_steps."
            )
    if config.warmup_steps >= config.total_steps:
        raise ValueError(
            f"warmup_epochs={config.warmup_epochs} is {config.warmup_steps} steps, not "
            f"fewer than the {config.total_steps} steps of the run. Shorten the warmup."
        )
    return info


def check_and_fill(config):
    """Checks every field of `config` (a `PretrainConfig`, changed in place:
    the preset's sizes, `score_layers` parsed, `num_images` and
    `steps_per_epoch` from the data) and returns the training split's
    `keras_ccmim.data.DatasetInfo`."""
    _check_model(config)
    _check_ccmim(config)
    _check_training(config)
    return _check_data(config)
