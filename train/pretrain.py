r"""Pretrains a ViT with ccMIM (or MAE) and leaves a checkpoint, a picture and numbers.

The run's fields come from a recipe, `--config=configs/<name>.py` (see
`configs/`), and `--config.<field>=value` overrides one. The default recipe,
`configs/demo.py`, is the README demo: a short ccMIM pretraining of ViT-T/4
(the `vit_tiny_patch4_32` preset: 32 px, patch 4, 192 wide, 12 blocks;
decoder 128 x 2) on 3,072 images of the built-in `synthetic_objects` data,
2 epochs of 48 steps at batch 64, a few minutes on a 2-core CPU:

    python train/pretrain.py --workdir=runs/demo

Every field is also a flag of its own (`--epochs=3` is `--config.epochs=3`;
`--bfloat16` sets mixed_precision), which overrides the recipe's value; a
field given both ways with different values is refused.

Running the same command again after an interruption (even SIGKILL)
continues from the newest intact checkpoint in the workdir (a damaged one is
skipped for an older one, and the line "Restored checkpoint ..." says which);
a workdir with metrics but no checkpoint is refused unless --fresh is given,
which moves the earlier run's outputs to <workdir>/previous-<n>/. A rerun
whose flags would change what the checkpointed run trains (its length, model,
masking, data, optimisation or seed) is refused, naming each change, unless
--allow_config_change is given. The CIFAR-10 study's recipe (ViT-T/4 on
`train[:45000]`), and the paper's ImageNet run shrunk to a CPU smoke test:

    python train/pretrain.py --config=configs/cifar10_vit_tiny.py \
        --data_dir=<folder holding the TFDS datasets>
    python train/pretrain.py --config=configs/imagenet_vit_base_ccmim.py:runlocal

Fields the recipe leaves unset take the preset's value (model sizes) or the
data's (`steps_per_epoch`: one pass over the split).
"""

import dataclasses
import os
import sys

from absl import app, flags
from ml_collections import config_flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_ccmim import training  # noqa: E402
from keras_ccmim.cli.console import run_messages_to_stdout  # noqa: E402
from keras_ccmim.file_io import describe_os_error  # noqa: E402

FLAGS = flags.FLAGS

# The recipe: every field of the run. The flags below are its fields too
# (--epochs=3 is --config.epochs=3); each defaults to the recipe's value.
DEMO_RECIPE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.py"
)
config_flags.DEFINE_config_file(
    "config",
    DEMO_RECIPE,
    "Recipe: a configs/*.py file whose get_config() returns the run's fields, optionally "
    "with an argument after a colon (configs/imagenet_vit_base_ccmim.py:runlocal); "
    "default: configs/demo.py. --config.<field>=value overrides one field.",
)

# Model: a preset plus overrides.
flags.DEFINE_string("preset", None, "Model preset name or alias (e.g. T/4, B/16).")
flags.DEFINE_integer("image_size", None, "Image size; default: the preset's.")
flags.DEFINE_integer("patch_size", None, "Patch size; default: the preset's.")
flags.DEFINE_integer("hidden_dim", None, "Encoder width.")
flags.DEFINE_integer("num_layers", None, "Encoder blocks.")
flags.DEFINE_integer("num_heads", None, "Encoder attention heads.")
flags.DEFINE_integer("decoder_hidden_dim", None, "Decoder width.")
flags.DEFINE_integer("decoder_num_layers", None, "Decoder blocks.")
flags.DEFINE_integer("decoder_num_heads", None, "Decoder heads.")

# ccMIM.
flags.DEFINE_float("mask_ratio", None, "Fraction of patches masked, in (0, 1).")
flags.DEFINE_string(
    "masking", None, "importance_sampling, importance, random or block."
)
flags.DEFINE_string("sampler", None, "gumbel or uniform_noise.")
flags.DEFINE_float(
    "sampling_temperature",
    None,
    "T_s of importance sampling (with --sampling_temperature_start: the value it anneals to).",
)
flags.DEFINE_float(
    "sampling_temperature_start",
    None,
    "If set, T_s starts here and falls along a half cosine to --sampling_temperature.",
)
flags.DEFINE_integer(
    "sampling_temperature_steps",
    None,
    "Steps of the T_s schedule; default: the whole run.",
)
flags.DEFINE_string(
    "score_layers", None, "all, last, or comma-separated block indices."
)
flags.DEFINE_enum(
    "score_from",
    None,
    ["probabilities", "logits"],
    "Importance score: softmax of the summed [CLS] attention probabilities (public code) "
    "or of the layer-mean scaled logits over the patch keys (the paper).",
)
flags.DEFINE_string(
    "contrastive", None, "infonce, infonce_cross, align or none."
)
flags.DEFINE_float("contrastive_weight", None, "lambda.")
flags.DEFINE_float("temperature", None, "tau of the InfoNCE losses.")
flags.DEFINE_integer("projection_dim", None, "Projector output width.")
flags.DEFINE_boolean("norm_pix_loss", None, "Normalise target patches.")

# Data.
flags.DEFINE_string(
    "dataset", None, "synthetic_objects, folder:/path/to/images or a TFDS name."
)
flags.DEFINE_string("data_dir", None, "Folder of prepared TFDS datasets.")
flags.DEFINE_string("split", None, "Split, optionally sliced: train[:45000].")
flags.DEFINE_integer(
    "num_images",
    None,
    "synthetic_objects: images generated (default 3072); other data: a cap (default all).",
)

# Optimisation.
flags.DEFINE_integer("batch_size", None, "Global batch size (per step).")
flags.DEFINE_integer(
    "accum_steps",
    None,
    "Steps whose gradients are averaged into one update: effective batch "
    "batch_size * accum_steps.",
)
flags.DEFINE_integer("epochs", None, "Training epochs.")
flags.DEFINE_integer(
    "steps_per_epoch", None, "Steps per epoch; default one pass."
)
flags.DEFINE_float(
    "blr", None, "Base learning rate: lr = blr * batch_size * accum_steps / 256."
)
flags.DEFINE_float("warmup_epochs", None, "Linear warmup epochs.")
flags.DEFINE_float("weight_decay", None, "AdamW weight decay.")
flags.DEFINE_integer("seed", None, "Seed of every random choice.")
flags.DEFINE_boolean("bfloat16", None, "Train with the mixed_bfloat16 policy.")
flags.DEFINE_enum(
    "distribution",
    None,
    list(training.DISTRIBUTIONS),
    "Data parallelism: auto, none, mirrored or multi_worker (TensorFlow), data_parallel (JAX).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "Multi-process JAX: host:port of process 0 (else KERAS_DISTRIBUTION_JOB_ADDRESSES).",
)
flags.DEFINE_integer(
    "num_processes",
    None,
    "Multi-process JAX: processes in all (else KERAS_DISTRIBUTION_NUM_PROCESSES).",
)
flags.DEFINE_integer(
    "process_id",
    None,
    "Multi-process JAX: this process, 0 writes the files (else KERAS_DISTRIBUTION_PROCESS_ID).",
)
flags.DEFINE_enum("jit_compile", None, ["auto", "true", "false"], "XLA compilation.")

# Output.
flags.DEFINE_string("workdir", None, "Folder of the run; reused to resume.")
flags.DEFINE_integer(
    "checkpoint_every_steps",
    None,
    "Checkpoint every this many steps as well as at epoch ends (0: epoch ends only).",
)
flags.DEFINE_integer("keep_checkpoints", None, "Checkpoints kept.")
flags.DEFINE_integer(
    "tensorboard_every_steps", None, "Steps between scalars."
)
flags.DEFINE_integer(
    "check_every_steps",
    None,
    "Steps between two reads of the loss by the host (NaN guard, healthy checkpoints); the "
    "steps between run without waiting for the device.",
)
flags.DEFINE_integer("lift_images", None, "Images for foreground lift.")
flags.DEFINE_enum("verbose", None, ["auto", "0", "1", "2"], "Keras fit verbosity.")
flags.DEFINE_boolean(
    "fresh",
    None,
    "Start over in a workdir that holds an earlier run (its checkpoints or metrics); its "
    "outputs are moved to <workdir>/previous-<n>/, never deleted. Without it such a "
    "workdir resumes from its newest intact checkpoint, or is refused.",
)
flags.DEFINE_string(
    "init_from",
    None,
    "Start from trained weights: an encoder preset (e.g. one converted from MAE's "
    "official weights with tools/convert_mae.py), a pretrainer preset (encoder, decoder "
    "and, when they fit, the ccMIM heads) or a pretraining workdir; a folder, kaggle:// or "
    "hf:// handle. Its architecture must match the run's (the image size may differ).",
)
flags.DEFINE_integer(
    "resume_from_step",
    None,
    "Train on from the checkpoint of this global step instead of the newest (after a NaN, "
    "the step the error names); later checkpoints are moved to "
    "<workdir>/checkpoints/abandoned-after-step-<step>/, never deleted. With it, --blr, "
    "--warmup_epochs, --weight_decay and --bfloat16 may differ from the checkpointed run's.",
)
flags.DEFINE_boolean(
    "allow_config_change",
    None,
    "Train on in a workdir whose checkpointed run had other settings that change what is "
    "trained (e.g. a longer --epochs); without it such a rerun is refused, naming each "
    "changed flag. config.json is updated.",
)

# Config fields whose flags differ in name or type; every other field is a
# flag of the same name.
_CONVERTED = ("mixed_precision", "jit_compile", "verbose")


def _given_flags():
    """The fields set by the flags that were given (a flag left unset is
    None), as config values."""
    values = {
        field.name: FLAGS[field.name].value
        for field in dataclasses.fields(training.PretrainConfig)
        if field.name not in _CONVERTED and FLAGS[field.name].value is not None
    }
    if FLAGS.bfloat16 is not None:
        values["mixed_precision"] = "bfloat16" if FLAGS.bfloat16 else "float32"
    for name in ("jit_compile", "verbose"):
        if FLAGS[name].value is not None:
            values[name] = FLAGS[name].value
    return training.config.recipe_values(values)


def config_from_flags():
    """The run's `PretrainConfig`: the --config recipe with its
    --config.<field> overrides, then the fields given as flags (--epochs=3).
    A field given both ways with different values is a usage error."""
    values = training.config.recipe_values(FLAGS.config)
    overrides = training.config.recipe_values(
        config_flags.get_override_values(FLAGS["config"])
    )
    for name, value in _given_flags().items():
        if name in overrides and overrides[name] != value:
            flag = {"mixed_precision": "bfloat16"}.get(name, name)
            raise app.UsageError(
                f"--config.{name}={overrides[name]!r} and --{flag} (which sets {name} to "
                f"{value!r}) contradict each other: pass one of them."
            )
        values[name] = value
    return training.PretrainConfig.from_dict(values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        with run_messages_to_stdout():  # the library logs; show it as before
            training.pretrain(config_from_flags())
    except (training.ConfigError, training.CheckpointError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 2
    except training.NonFiniteLossError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a file or folder that cannot be read or written
        print(f"Error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    app.run(main)
