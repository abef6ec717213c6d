"""The configuration of a pretraining run, and its validation.

`PretrainConfig`'s defaults are the paper's ImageNet-1K recipe (ccMIM and
MAE: ViT-B/16, 800 epochs at batch 4096, blr 1.5e-4 with 40 warmup epochs);
`workdir` has no default. The recipes in `configs/` (the README demo, the
CIFAR-10 study, ImageNet, MAE) set the fields they need. `resolve_config`
checks every field before any work starts (`config_checks`) and fills the
ones left to the preset or the data; `config_changes` says which fields a
rerun on a checkpointed workdir may change.
"""

import dataclasses
import importlib.util
import json
import math
import numbers
import os

from ml_collections import config_dict

from keras_ccmim.file_io import nearest_existing
from keras_ccmim.layers.importance_scorer import SCORE_SOURCES, resolve_score_layers
from keras_ccmim.layers.patch_selector import MASKING_STRATEGIES, SAMPLERS
from keras_ccmim.losses import CONTRASTIVE_LOSSES
from keras_ccmim.models.presets import ENCODER_SIZE_FIELDS as ENCODER_FIELDS
from keras_ccmim.models.presets import get_preset
from keras_ccmim.training.distribution import plan_distribution, process_count

@dataclasses.dataclass
class PretrainConfig:
    """Everything a pretraining run needs; `None` means "from the preset" or
    "from the data" (`workdir` must be given). The defaults are the paper's
    ImageNet recipe; `configs/demo.py` holds the README demo's values.

    Model (`preset` plus overrides; see `keras_ccmim.models.presets`):
        preset, image_size, patch_size, hidden_dim, num_layers, num_heads,
        decoder_hidden_dim, decoder_num_layers, decoder_num_heads;
        init_from (None: random init; else the preset or workdir whose
        weights a fresh run starts from, see `pretrain.initialise_from`).
    ccMIM (see `CCMIMPretrainer`): mask_ratio, masking, sampler,
        sampling_temperature, sampling_temperature_start (None: a constant
        `T_s`; else `T_s` anneals along a half cosine from this value to
        `sampling_temperature`), sampling_temperature_steps (the schedule's
        length; None: the whole run), score_layers (`"all"`, `"last"` or a
        list of block indices), score_from (`"probabilities"` or
        `"logits"`), contrastive, contrastive_weight (lambda), temperature
        (tau), projection_dim, norm_pix_loss.
    Data (see `keras_ccmim.data.make_dataset`): dataset, data_dir, split,
        num_images (None: `DEMO_SYNTHETIC_IMAGES` for `synthetic_objects`,
        every image of other data).
    Optimisation: batch_size (global, per step), accum_steps (steps whose
        gradients are averaged into one optimizer update, Keras'
        `gradient_accumulation_steps`: the effective batch is
        `batch_size * accum_steps`), epochs, steps_per_epoch (None: one
        pass over the split; a multiple of accum_steps), blr (`lr = blr *
        batch_size * accum_steps / 256`),
        warmup_epochs, weight_decay, seed, mixed_precision (`"bfloat16"`
        for Keras' `mixed_bfloat16` policy, else `"float32"`), distribution
        (see `keras_ccmim.training.distribution`), jit_compile;
        coordinator_address, num_processes, process_id (a multi-process
        JAX run, `keras.distribution.initialize`; None: the
        `KERAS_DISTRIBUTION_*` variables, or one process).
    Output: workdir (required), checkpoint_every_steps (0: epoch ends only),
        keep_checkpoints, tensorboard_every_steps (0: epochs only),
        check_every_steps (steps between two reads of the loss by the host:
        the NaN guard stops within this many steps; between reads the host
        does not wait for the device),
        lift_images (images of the fixed foreground-lift batch), verbose
        (Keras `fit` verbosity), fresh (start over in a workdir that holds
        an earlier run, whose outputs are moved to `previous-<n>/`; without
        it such a workdir resumes or is refused), resume_from_step (train
        on from the checkpoint of this step rather than the newest, e.g.
        from before a NaN; later checkpoints are moved aside),
        allow_config_change (train on in a workdir whose checkpointed run
        had other values of fields outside `RESUMABLE_CHANGES`; without it
        such a rerun is refused, see `config_changes`).
    """

    preset: str = "vit_base_patch16_224"
    image_size: int = None
    patch_size: int = None
    hidden_dim: int = None
    num_layers: int = None
    num_heads: int = None
    decoder_hidden_dim: int = None
    decoder_num_layers: int = None
    decoder_num_heads: int = None

    init_from: str = None

    mask_ratio: float = 0.75
    masking: str = "importance_sampling"
    sampler: str = "gumbel"
    sampling_temperature: float = 1.0
    sampling_temperature_start: float = None
    sampling_temperature_steps: int = None
    score_layers: object = "all"
    score_from: str = "probabilities"
    contrastive: str = "infonce"
    contrastive_weight: float = 0.2
    temperature: float = 0.5
    projection_dim: int = 256
    norm_pix_loss: bool = True

    dataset: str = "synthetic_objects"
    data_dir: str = None
    split: str = "train"
    num_images: int = None

    batch_size: int = 4096
    accum_steps: int = 1
    epochs: int = 800
    steps_per_epoch: int = None
    blr: float = 1.5e-4
    warmup_epochs: float = 40.0
    weight_decay: float = 0.05
    seed: int = 0
    mixed_precision: str = "float32"
    distribution: str = "auto"
    coordinator_address: str = None
    num_processes: int = None
    process_id: int = None
    jit_compile: object = "auto"

    workdir: str = None
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 2
    tensorboard_every_steps: int = 10
    check_every_steps: int = 20
    lift_images: int = 64
    verbose: object = "auto"
    fresh: bool = False
    resume_from_step: int = None
    allow_config_change: bool = False

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(names))}."
            )
        return cls(**values)

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @property
    def learning_rate(self):
        """`blr * batch_size * accum_steps / 256` (MAE's linear scaling rule
        on the effective batch)."""
        return self.blr * self.effective_batch_size / 256.0

    @property
    def effective_batch_size(self):
        """Images per optimizer update: `batch_size * accum_steps`."""
        return self.batch_size * self.accum_steps

    @property
    def total_steps(self):
        return self.epochs * self.steps_per_epoch

    @property
    def temperature_schedule_steps(self):
        """Steps of the sampling-temperature schedule (0 when `T_s` is constant)."""
        if self.sampling_temperature_start is None:
            return 0
        return self.sampling_temperature_steps or self.total_steps

    @property
    def warmup_steps(self):
        return int(round(self.warmup_epochs * self.steps_per_epoch))


class ConfigError(ValueError):
    """A `PretrainConfig` that cannot run; the message names the fix."""


def resolve_config(config):
    """Validates `config` and fills its `None` fields.

    Checks every field (names, ranges, shapes), the distribution against the
    backend and the devices, and that the data exist, and raises a
    `ConfigError` (a `ValueError`) naming the problem and the fix before any
    model or pipeline is built.

    Args:
        config: a `PretrainConfig` or a dict of its fields.

    Returns:
        `(resolved_config, dataset_info)`: a new `PretrainConfig` with the
        preset's sizes and `steps_per_epoch` filled in, and the
        `keras_ccmim.data.DatasetInfo` of the training split.
    """
    try:
        if isinstance(config, dict):
            config = PretrainConfig.from_dict(config)
        config = dataclasses.replace(config)
        info = check_and_fill(config)
    except ConfigError:
        raise
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return config, info


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


# Fields of type `object` whose command-line override arrives as a string:
# the value each string stands for (other strings pass through unchanged).
_FROM_STRING = {
    "jit_compile": {"auto": "auto", "true": True, "false": False},
    "verbose": {"auto": "auto", "0": 0, "1": 1, "2": 2},
}


def recipe(**values):
    """A ConfigDict with every `PretrainConfig` field: `values` where given,
    the library's default (the paper's recipe) elsewhere.

    A field whose value is None is a typed placeholder, so that
    `--config.<field>=value` parses as the field's type (int, float, str,
    bool); float fields hold floats (`--config.warmup_epochs=0.5` on a
    recipe that wrote 40).
    """
    fields = {field.name: field for field in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(
            f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(fields))}."
        )
    config = config_dict.ConfigDict()
    for name, field in fields.items():
        value = values.get(name, field.default)
        kind = field.type if field.type in (int, float, str, bool) else str
        if value is None:
            value = config_dict.placeholder(kind)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        config[name] = value
    return config


def recipe_values(config):
    """The fields of a recipe's ConfigDict (or a dict) as `PretrainConfig`
    takes them: "true"/"false" and "0"/"1"/"2" given on the command line for
    jit_compile and verbose become the bool or int they stand for."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for name, meanings in _FROM_STRING.items():
        if isinstance(values.get(name), str):
            values[name] = meanings.get(values[name].lower(), values[name])
    return values


def config_from_recipe(config):
    """The `PretrainConfig` of a recipe's ConfigDict (unknown fields are an
    error naming the valid ones)."""
    return PretrainConfig.from_dict(recipe_values(config))


def load_recipe(spec):
    """The ConfigDict of recipe `spec`, `"path/to/recipe.py"` or
    `"path/to/recipe.py:arg"` (`arg` is passed to its `get_config`), as
    `--config=spec` loads it."""
    path, colon, arg = os.fspath(spec).partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Recipe {path!r} does not exist: pass a configs/*.py file.")
    name = "recipe_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if colon else module.get_config()
