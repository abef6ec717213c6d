"""The configuration of a pretraining run: every field written once.

Each field of `PretrainConfig` is declared in one place with `_field`: its
name, default, one line of documentation, its own check (fields that are
arguments of the model's constructors are checked there, when
`resolve_config` constructs the model), and what a rerun on a checkpointed
workdir may do with it (`rerun`). The recipes' `--config.<field>` flags,
the JSON a run saves, the resume comparison (`keras_ccmim.training.workdir`)
and the reference table of the docs (`describe_fields`) all derive from
these declarations. Rules between fields live in `_check_across_fields`.

The defaults are the paper's ImageNet-1K recipe (ccMIM and MAE: ViT-B/16,
800 epochs at batch 4096, blr 1.5e-4 with 40 warmup epochs); `workdir` has
no default. Recipes (`keras_ccmim/recipes/`, big_vision style) set the
fields a run needs.
"""

import dataclasses
import importlib.util
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml_collections import config_dict

from keras_ccmim import checks
from keras_ccmim.file_io import check_writable_location
from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.presets import ENCODER_SIZE_FIELDS, get_preset
from keras_ccmim.training.distribution import DISTRIBUTIONS, plan_distribution, process_count
from keras_ccmim.type_aliases import PathLike

if TYPE_CHECKING:
    from keras_ccmim.data.dataset_info import DatasetInfo

# What a rerun on a workdir that holds a checkpointed run may do with a
# field (`keras_ccmim.training.workdir.config_changes`):
REFUSE = "refuse"  # it changes what is trained: refused unless allow_config_change
FREE = "free"  # where files and data are, how the run is driven and logged
RESTART = "restart"  # the NaN advice's knobs: free with resume_from_step

# Images of `synthetic_objects` generated when num_images is None: the demo's
# size (the data package's own default is 10,000).
DEMO_SYNTHETIC_IMAGES = 3072
# The workdir file with the scan of a `folder:` dataset (see
# `keras_ccmim.data.write_dataset_manifest`); a resumed run reuses it.
FOLDER_MANIFEST_FILE = "image_folder_manifest.json"


def _field(default, doc, check=None, rerun=REFUSE, flag=False):
    """A `PretrainConfig` field. `check(name, value)` raises a `ValueError`
    for a bad value (None: the model's constructor checks it); `flag`: a
    run-level field, set by its own command-line flag (`--workdir`) rather
    than by the recipe (`--config.<field>`)."""
    return dataclasses.field(
        default=default, metadata={"doc": doc, "check": check, "rerun": rerun, "flag": flag}
    )


def _int(minimum, optional=False):
    return lambda name, value: checks.check_int(name, value, minimum, optional=optional)


def _positive(hint=""):
    return lambda name, value: checks.check_positive(name, value, hint)


def _non_negative(hint=""):
    return lambda name, value: checks.check_non_negative(name, value, hint)


def _choice(*choices):
    return lambda name, value: checks.check_choice(name, value, choices)


def _optional_text(what):
    def check(name, value):
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{name} must be {what}, got {value!r}.")
    return check


def _optional(check):
    return lambda name, value: None if value is None else check(name, value)


def _jit_compile(name, value):
    if value not in ("auto", True, False):
        raise ValueError(f"{name} must be 'auto', True or False, got {value!r}.")


def _verbose(name, value):
    if value not in ("auto", 0, 1, 2):
        raise ValueError(f"{name} must be 'auto', 0, 1 or 2, got {value!r}.")


def _coordinator(name, value):
    if value is not None and (not isinstance(value, str) or ":" not in value):
        raise ValueError(f"{name} must be 'host:port' of process 0, got {value!r}.")


def _workdir(name, value):
    if value is None:
        raise ValueError(
            "workdir is not set: pass --workdir=<folder of the run> (workdir=... in Python)."
        )
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise ValueError(f"{name} must be a folder path, got {value!r}.")
    workdir = os.fspath(value)
    if os.path.lexists(workdir) and not os.path.isdir(workdir):
        raise ValueError(
            f"workdir {workdir!r} is a file, not a folder. Pass a folder path (a new one "
            "starts a new run)."
        )
    check_writable_location(workdir, f"workdir {workdir!r}", "a workdir")


_MODEL = "checked by the model's constructors"


@dataclasses.dataclass
class PretrainConfig:
    """Everything a pretraining run needs; `None` means "from the preset" or
    "from the data". The defaults are the paper's ImageNet recipe; each
    field's documentation is in its declaration (`describe_fields()` lists
    them all) and `keras_ccmim/recipes/demo.py` holds the README demo's
    values."""

    # Model: a preset plus overrides (see `keras_ccmim.models.presets`).
    preset: str = _field(
        "vit_base_patch16_224", "Encoder and decoder sizes by name (`vit_tiny_patch4_32`, "
        "`vit_base_patch16_224`, ...) or alias (`T/4`, `B/16`).")
    image_size: int = _field(None, "Image size in pixels; None: the preset's.")
    patch_size: int = _field(None, "Patch size; None: the preset's.")
    hidden_dim: int = _field(None, "Encoder width D; None: the preset's.")
    num_layers: int = _field(None, "Encoder blocks; None: the preset's.")
    num_heads: int = _field(None, "Encoder attention heads; None: the preset's.")
    decoder_hidden_dim: int = _field(None, "Decoder width; None: the preset's.")
    decoder_num_layers: int = _field(None, "Decoder blocks; None: the preset's.")
    decoder_num_heads: int = _field(None, "Decoder attention heads; None: the preset's.")
    init_from: str = _field(
        None, "None: random initialisation; else the preset (folder, kaggle:// or hf:// "
        "handle) or pretraining workdir whose weights a fresh run starts from.",
        _optional_text("a preset (a folder, kaggle:// or hf:// handle) or a pretraining "
                       "workdir"))

    # ccMIM (the arguments of `CCMIMPretrainer`).
    mask_ratio: float = _field(0.75, "Fraction of patches masked.")
    masking: str = _field(
        "importance_sampling", "importance_sampling, importance (top-K), random (MAE) or block.")
    sampler: str = _field(
        "gumbel", "Importance sampling's rule: gumbel (Gumbel-top-K) or uniform_noise.")
    sampling_temperature: float = _field(
        1.0, "T_s of importance sampling (with sampling_temperature_start: its final value).")
    sampling_temperature_start: float = _field(
        None, "None: a constant T_s; else T_s anneals along a half cosine from this value to "
        "sampling_temperature.")
    sampling_temperature_steps: int = _field(
        None, "Steps of the T_s schedule; None: the whole run.", _int(1, optional=True))
    score_layers: object = _field(
        "all", "Blocks whose [CLS] attention scores the patches: all, last, or indices "
        "('3,5' or a list).")
    score_from: str = _field(
        "probabilities", "probabilities (after the public code's rule) or logits (the paper's "
        "score).")
    score_scale: str = _field(
        "head_dim", "What divides the logit score's logits: head_dim (sqrt(D_head), as the "
        "attention does) or hidden_dim (sqrt(D), the paper's Section 3.2 as written).")
    scoring_drop_path: bool = _field(False, "Drop path in the no-gradient scoring pass.")
    teacher_drop_path: bool = _field(False, "Drop path in the teacher (masked-set) pass.")
    teacher_updates_moving_statistics: bool = _field(
        True, "The teacher pass updates the projector's BatchNorm moving statistics too.")
    contrastive: str = _field("infonce", "infonce, infonce_cross, align or none (MAE).")
    contrastive_weight: float = _field(0.2, "lambda, the contrastive loss's weight.")
    temperature: float = _field(0.5, "tau of the InfoNCE losses.")
    projection_dim: int = _field(256, "Width of the contrastive projector's output.")
    norm_pix_loss: bool = _field(True, "Normalise each target patch (MAE's norm_pix_loss).")

    # Data (see `keras_ccmim.data.make_dataset`).
    dataset: str = _field(
        "synthetic_objects", "synthetic_objects, folder:/path/to/images or a TFDS name.",
        _optional_text("a dataset name"))
    data_dir: str = _field(
        None, "Folder of the prepared TFDS datasets.", _optional_text("a folder path"), FREE)
    split: str = _field("train", "Split, optionally sliced: train[:45000], train[:90%].")
    num_images: int = _field(
        None, "synthetic_objects: images generated (None: 3072); other data: a cap (None: "
        "all).", _int(1, optional=True))
    max_pixels: int = _field(
        None, "Images larger than this many pixels (read from their headers) are skipped, "
        "not decoded; None: the data pipeline's cap, Pillow's.", _int(1, optional=True))

    # Optimisation.
    batch_size: int = _field(4096, "Global batch per step.", _int(1))
    accum_steps: int = _field(
        1, "Steps whose gradients are averaged into one update: the effective batch is "
        "batch_size * accum_steps.", _int(1))
    epochs: int = _field(800, "Training epochs.", _int(1))
    steps_per_epoch: int = _field(
        None, "Steps per epoch (a multiple of accum_steps); None: one pass over the split.",
        _int(1, optional=True))
    blr: float = _field(
        1.5e-4, "Base learning rate: lr = blr * batch_size * accum_steps / 256.",
        _positive(" (MAE and ccMIM use 1.5e-4.)"), RESTART)
    warmup_epochs: float = _field(
        40.0, "Epochs of linear warmup before the cosine decay.", _non_negative(), RESTART)
    weight_decay: float = _field(
        0.05, "AdamW weight decay (none on biases, norms and embeddings).",
        _non_negative(" (MAE and ccMIM use 0.05.)"), RESTART)
    seed: int = _field(0, "Seed of every random choice (init, data order, masks).", _int(0))
    mixed_precision: str = _field(
        "float32", "float32, or bfloat16 for Keras' mixed_bfloat16 policy.",
        _choice("float32", "bfloat16"), RESTART)
    jit_compile: object = _field("auto", "XLA compilation: auto, True or False.", _jit_compile,
                                 FREE)

    # How the run is driven: run-level flags (`--workdir=...`), free on rerun.
    workdir: str = _field(None, "Folder of the run (required); reused to resume.", _workdir,
                          FREE, flag=True)
    distribution: str = _field(
        "auto", "auto, none, mirrored or multi_worker (TensorFlow), data_parallel (JAX).",
        _choice(*DISTRIBUTIONS), FREE, flag=True)
    coordinator_address: str = _field(
        None, "Multi-process JAX: host:port of process 0 (None: KERAS_DISTRIBUTION_* "
        "variables).", _coordinator, FREE, flag=True)
    num_processes: int = _field(None, "Multi-process JAX: processes in all.",
                                _int(1, optional=True), FREE, flag=True)
    process_id: int = _field(None, "Multi-process JAX: this process (0 writes the files).",
                             _int(0, optional=True), FREE, flag=True)
    fresh: bool = _field(
        False, "Start over in a workdir that holds an earlier run; its outputs move to "
        "previous-<n>/, never deleted.", checks.check_bool, FREE, flag=True)
    resume_from_step: int = _field(
        None, "Train on from the checkpoint of this step rather than the newest (after a "
        "NaN); later checkpoints are moved aside, and blr, warmup_epochs, weight_decay "
        "and mixed_precision may change.", _int(1, optional=True), FREE, flag=True)
    allow_config_change: bool = _field(
        False, "Train on in a workdir whose checkpointed run had other values of fields "
        "that change what is trained.", checks.check_bool, FREE, flag=True)

    # Output.
    checkpoint_every_steps: int = _field(
        0, "Checkpoint every this many steps as well as at epoch ends (0: epoch ends only).",
        _int(0), FREE)
    keep_checkpoints: int = _field(2, "Checkpoints kept (and the newest healthy one).",
                                   _int(1), FREE)
    tensorboard_every_steps: int = _field(10, "Steps between TensorBoard scalars (0: epochs).",
                                          _int(0), FREE)
    check_every_steps: int = _field(
        20, "Steps between two reads of the loss by the host: the NaN guard stops within "
        "this many steps; in between the host does not wait for the device.", _int(1), FREE)
    lift_images: int = _field(64, "Images of the fixed batch the masking figures use.",
                              _int(1))
    verbose: object = _field("auto", "Keras fit verbosity: auto, 0, 1 or 2.", _verbose, FREE)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PretrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(names))}."
            )
        return cls(**values)

    def save(self, path: PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: PathLike) -> "PretrainConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    @property
    def learning_rate(self) -> float:
        """`blr * batch_size * accum_steps / 256` (MAE's linear scaling rule
        on the effective batch)."""
        return self.blr * self.effective_batch_size / 256.0

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer update: `batch_size * accum_steps`."""
        return self.batch_size * self.accum_steps

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def temperature_schedule_steps(self) -> int:
        """Steps of the sampling-temperature schedule (0 when `T_s` is constant)."""
        if self.sampling_temperature_start is None:
            return 0
        return self.sampling_temperature_steps or self.total_steps

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_epochs * self.steps_per_epoch))


def fields(rerun: str | None = None, flag: bool | None = None) -> tuple[str, ...]:
    """The names of `PretrainConfig`'s fields, in order; only those whose
    `rerun` rule (REFUSE, FREE, RESTART) or `flag` is the one given."""
    return tuple(
        f.name for f in dataclasses.fields(PretrainConfig)
        if (rerun is None or f.metadata["rerun"] == rerun)
        and (flag is None or f.metadata["flag"] == flag)
    )


def describe_fields() -> str:
    """The fields as a Markdown table: name, default, what it does, and
    whether a rerun of a checkpointed run may change it."""
    rerun = {REFUSE: "refused", FREE: "free", RESTART: "with resume_from_step"}
    rows = ["| field | default | what it does | on a rerun |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(PretrainConfig):
        name = f"`--{field.name}`" if field.metadata["flag"] else f"`{field.name}`"
        rows.append(f"| {name} | `{field.default!r}` | {field.metadata['doc']} | "
                    f"{rerun[field.metadata['rerun']]} |")
    return "\n".join(rows)


class ConfigError(ValueError):
    """A `PretrainConfig` that cannot run; the message names the fix."""


def resolve_config(
    config: PretrainConfig | dict[str, Any],
) -> "tuple[PretrainConfig, DatasetInfo]":
    """Validates `config` and fills its `None` fields.

    Checks every field (its own check, or the model's constructors for the
    model's arguments), the rules between fields, the distribution against
    the backend and the devices, and that the data exist, and raises a
    `ConfigError` (a `ValueError`) naming the problem and the fix before any
    weights or pipeline are built.

    Args:
        config: a `PretrainConfig` or a dict of its fields.

    Returns:
        `(resolved_config, dataset_info)`: a new `PretrainConfig` with the
        preset's sizes, `num_images` and `steps_per_epoch` filled in, and the
        `keras_ccmim.data.DatasetInfo` of the training split.
    """
    try:
        if isinstance(config, dict):
            config = PretrainConfig.from_dict(config)
        config = dataclasses.replace(config)
        for field in dataclasses.fields(config):
            if field.metadata["check"] is not None:
                field.metadata["check"](field.name, getattr(config, field.name))
        config.score_layers = parse_score_layers(config.score_layers)
        _fill_from_preset(config)
        build_pretrainer(config, build=False)  # its constructors check the model's fields
        _check_across_fields(config)
        info = _check_data(config)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from error
    return config, info


def parse_score_layers(value: str | Sequence[int]) -> str | Sequence[int]:
    """`"all"`, `"last"`, a list of ints, or a string of comma-separated ints
    (as `--config.score_layers=3,5` gives it) as the model takes it."""
    if isinstance(value, str) and value not in ("all", "last"):
        try:
            return [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"score_layers must be 'all', 'last' or comma-separated block "
                f"indices such as '3,5', got {value!r}."
            ) from None
    return value


def _fill_from_preset(config):
    preset = get_preset(config.preset)
    for name in ENCODER_SIZE_FIELDS:
        if getattr(config, name) is None:
            setattr(config, name, preset["encoder"][name])
    for name, value in preset["decoder"].items():
        if getattr(config, f"decoder_{name}") is None:
            setattr(config, f"decoder_{name}", value)


def build_pretrainer(config: PretrainConfig, build: bool = True) -> CCMIMPretrainer:
    """The `CCMIMPretrainer` of a `PretrainConfig` whose sizes are filled in
    (`resolve_config`), built unless `build=False`: every field that is an
    argument of its constructor is passed as it is, the encoder's sizes go to
    the encoder, and the temperature schedule's length is resolved against
    the run's steps."""
    arguments = inspect.signature(CCMIMPretrainer.__init__).parameters
    values = {
        name: getattr(config, name) for name in fields() if name in arguments
    }
    # Before the data fill steps_per_epoch in, a schedule of the whole run
    # is checked as one step long.
    if config.steps_per_epoch is not None:
        values["sampling_temperature_steps"] = config.temperature_schedule_steps
    elif config.sampling_temperature_start is not None:
        values["sampling_temperature_steps"] = config.sampling_temperature_steps or 1
    else:
        values["sampling_temperature_steps"] = 0
    encoder_overrides = {name: getattr(config, name) for name in ENCODER_SIZE_FIELDS}
    encoder_overrides["seed"] = config.seed
    model = CCMIMPretrainer.from_architecture(
        config.preset, encoder_overrides=encoder_overrides, **values
    )
    if build:
        model.build()
    return model


def _check_across_fields(config):
    """The rules between fields (each field's own range is checked with it)."""
    if config.fresh and config.resume_from_step is not None:
        raise ValueError(
            "fresh and resume_from_step contradict each other: fresh starts the run over, "
            "resume_from_step trains on from one of its checkpoints. Pass one of them."
        )
    if config.steps_per_epoch is not None and config.steps_per_epoch % config.accum_steps:
        raise ValueError(
            f"steps_per_epoch {config.steps_per_epoch} is not a multiple of accum_steps "
            f"{config.accum_steps}: an epoch would end inside an accumulation. Use a "
            f"multiple of {config.accum_steps}."
        )
    if not config.warmup_epochs < config.epochs:
        raise ValueError(
            f"warmup_epochs must be >= 0 and smaller than epochs ({config.epochs}), "
            f"got {config.warmup_epochs!r}."
        )
    if config.contrastive != "none" and config.batch_size < 2:
        raise ValueError(
            f"batch_size {config.batch_size} is too small for contrastive="
            f"{config.contrastive!r}: InfoNCE needs other images of the batch as negatives "
            "and the projector's BatchNorm needs two samples. Use batch_size >= 2 (or "
            "contrastive='none' for MAE)."
        )
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
            "--config.data_dir=<folder holding the prepared TFDS datasets> (data_dir=... "
            "in Python)."
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
        max_pixels=config.max_pixels,
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


# Recipes: a run's fields as an `ml_collections.ConfigDict`, big_vision style.

# The shipped recipes: `keras_ccmim/recipes/<name>.py`.
RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "recipes")

# Fields of type `object` whose command-line override arrives as a string:
# the value each string stands for (other strings pass through unchanged).
_FROM_STRING = {
    "jit_compile": {"auto": "auto", "true": True, "false": False},
    "verbose": {"auto": "auto", "0": 0, "1": 1, "2": 2},
}


def recipe(**values: Any) -> config_dict.ConfigDict:
    """A ConfigDict with every recipe field of `PretrainConfig` (all but the
    run-level flags such as `workdir`): `values` where given, the library's
    default (the paper's recipe) elsewhere.

    A field whose value is None is a typed placeholder, so that
    `--config.<field>=value` parses as the field's type (int, float, str,
    bool); float fields hold floats (`--config.warmup_epochs=0.5` on a
    recipe that wrote 40).
    """
    names = fields(flag=False)
    unknown = sorted(set(values) - set(names))
    if unknown:
        flags = sorted(set(unknown) & set(fields(flag=True)))
        if flags:
            raise ValueError(
                f"{', '.join(flags)} is set per run, not by a recipe: pass "
                f"{' '.join(f'--{name}=...' for name in flags)} on the command line "
                "(the same field of PretrainConfig in Python)."
            )
        raise ValueError(
            f"Unknown config field(s) {unknown}. Valid fields: {', '.join(sorted(names))}."
        )
    config = config_dict.ConfigDict()
    for field in dataclasses.fields(PretrainConfig):
        if field.name not in names:
            continue
        value = values.get(field.name, field.default)
        kind = field.type if field.type in (int, float, str, bool) else str
        if value is None:
            value = config_dict.placeholder(kind)
        elif kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        config[field.name] = value
    return config


def recipe_values(config: config_dict.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a recipe's ConfigDict (or a dict) as `PretrainConfig`
    takes them: "true"/"false" and "0"/"1"/"2" given on the command line for
    jit_compile and verbose become the bool or int they stand for."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for name, meanings in _FROM_STRING.items():
        if isinstance(values.get(name), str):
            values[name] = meanings.get(values[name].lower(), values[name])
    return values


def config_from_recipe(
    config: config_dict.ConfigDict | Mapping[str, Any], **run_values: Any
) -> PretrainConfig:
    """The `PretrainConfig` of a recipe's ConfigDict plus the run-level
    fields (`workdir=...`); unknown fields are an error naming the valid
    ones."""
    return PretrainConfig.from_dict(dict(recipe_values(config), **run_values))


def recipe_path(spec: PathLike) -> str:
    """The file of recipe `spec`: a shipped recipe's name (`"demo"`) or a
    path (`"path/to/recipe.py"`), without its `:arg`."""
    path = os.fspath(spec).partition(":")[0]
    shipped = os.path.join(RECIPES_DIR, f"{path}.py")
    if os.sep not in path and not path.endswith(".py") and os.path.isfile(shipped):
        return shipped
    return path


def recipe_names() -> list[str]:
    """The names of the shipped recipes."""
    return sorted(
        name[:-3] for name in os.listdir(RECIPES_DIR)
        if name.endswith(".py") and not name.startswith("_")
    )


def load_recipe(spec: PathLike) -> config_dict.ConfigDict:
    """The ConfigDict of recipe `spec`: a shipped recipe's name (`"demo"`,
    see `recipe_names()`) or a file `"path/to/recipe.py"`, optionally with
    `":arg"` passed to its `get_config`, as `--config=spec` loads it."""
    spec = os.fspath(spec)
    _, colon, arg = spec.partition(":")
    path = recipe_path(spec)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Recipe {spec!r} does not exist: pass a recipe name "
            f"({', '.join(recipe_names())}) or a path to a .py file with get_config()."
        )
    name = "recipe_" + os.path.splitext(os.path.basename(path))[0]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if colon else module.get_config()
