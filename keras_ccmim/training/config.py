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
import json

# Re-exported: callers read the run's constants, checks and comparisons here.
from keras_ccmim.training.config_changes import (  # noqa: F401
    RESTART_CHANGES,
    RESUMABLE_CHANGES,
    all_config_changes,
    config_changes,
    describe_changes,
)
from keras_ccmim.training.config_checks import (  # noqa: F401
    DECODER_FIELDS,
    DEMO_SYNTHETIC_IMAGES,
    FOLDER_MANIFEST_FILE,
    check_and_fill,
    parse_score_layers,
)

# The blr the NaN advice (`pretrain.nan_advice`) falls back to for a run whose
# blr is over ten times larger: the demo recipe's (`configs/demo.py`), which
# small runs train at (the paper's 1.5e-4 is for batches of thousands).
NAN_ADVICE_BLR = 1.5e-3


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
