r"""Pretrains a ViT with ccMIM (or MAE) and leaves a checkpoint, a picture and numbers.

The defaults are the README demo: a short ccMIM pretraining of ViT-T/4 (the
`vit_tiny_patch4_32` preset: 32 px, patch 4, 192 wide, 12 blocks; decoder
128 x 2) on 3,072 images of the built-in `synthetic_objects` data, 2 epochs
of 48 steps at batch 64, a few minutes on a 2-core CPU:

    python train/pretrain.py --workdir=runs/demo

Running the same command again after an interruption (even SIGKILL)
continues from the newest intact checkpoint in the workdir (a damaged one is
skipped for an older one, and the line "Restored checkpoint ..." says which);
a workdir with metrics but no checkpoint is refused unless --fresh is given,
which moves the earlier run's outputs to <workdir>/previous-<n>/. A rerun
whose flags would change what the checkpointed run trains (its length, model,
masking, data, optimisation or seed) is refused, naming each change, unless
--allow_config_change is given. CIFAR-10 from the shared TFDS folder, ViT-T/4
with the MAE/ccMIM optimiser recipe:

    python train/pretrain.py --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --split='train[:45000]' --batch_size=256 \
        --blr=1.5e-4 --epochs=400 --warmup_epochs=40

Flags left unset take the preset's value (model sizes) or the data's
(`steps_per_epoch`: one pass over the split).
"""

import dataclasses
import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_ccmim import training  # noqa: E402
from keras_ccmim.file_errors import describe_os_error  # noqa: E402

_DEFAULTS = training.PretrainConfig()
FLAGS = flags.FLAGS

# Model: a preset plus overrides.
flags.DEFINE_string("preset", _DEFAULTS.preset, "Model preset name or alias (e.g. T/4, B/16).")
flags.DEFINE_integer("image_size", _DEFAULTS.image_size, "Image size; default: the preset's.")
flags.DEFINE_integer("patch_size", _DEFAULTS.patch_size, "Patch size; default: the preset's.")
flags.DEFINE_integer("hidden_dim", _DEFAULTS.hidden_dim, "Encoder width.")
flags.DEFINE_integer("num_layers", _DEFAULTS.num_layers, "Encoder blocks.")
flags.DEFINE_integer("num_heads", _DEFAULTS.num_heads, "Encoder attention heads.")
flags.DEFINE_integer("decoder_hidden_dim", _DEFAULTS.decoder_hidden_dim, "Decoder width.")
flags.DEFINE_integer("decoder_num_layers", _DEFAULTS.decoder_num_layers, "Decoder blocks.")
flags.DEFINE_integer("decoder_num_heads", _DEFAULTS.decoder_num_heads, "Decoder heads.")

# ccMIM.
flags.DEFINE_float("mask_ratio", _DEFAULTS.mask_ratio, "Fraction of patches masked, in (0, 1).")
flags.DEFINE_string(
    "masking", _DEFAULTS.masking, "importance_sampling, importance, random or block."
)
flags.DEFINE_string("sampler", _DEFAULTS.sampler, "gumbel or uniform_noise.")
flags.DEFINE_float(
    "sampling_temperature",
    _DEFAULTS.sampling_temperature,
    "T_s of importance sampling (with --sampling_temperature_start: the value it anneals to).",
)
flags.DEFINE_float(
    "sampling_temperature_start",
    _DEFAULTS.sampling_temperature_start,
    "If set, T_s starts here and falls along a half cosine to --sampling_temperature.",
)
flags.DEFINE_integer(
    "sampling_temperature_steps",
    _DEFAULTS.sampling_temperature_steps,
    "Steps of the T_s schedule; default: the whole run.",
)
flags.DEFINE_string(
    "score_layers", _DEFAULTS.score_layers, "all, last, or comma-separated block indices."
)
flags.DEFINE_enum(
    "score_from",
    _DEFAULTS.score_from,
    ["probabilities", "logits"],
    "Importance score: softmax of the summed [CLS] attention probabilities (public code) "
    "or of the layer-mean scaled logits over the patch keys (the paper).",
)
flags.DEFINE_string(
    "contrastive", _DEFAULTS.contrastive, "infonce, infonce_cross, align or none."
)
flags.DEFINE_float("contrastive_weight", _DEFAULTS.contrastive_weight, "lambda.")
flags.DEFINE_float("temperature", _DEFAULTS.temperature, "tau of the InfoNCE losses.")
flags.DEFINE_integer("projection_dim", _DEFAULTS.projection_dim, "Projector output width.")
flags.DEFINE_boolean("norm_pix_loss", _DEFAULTS.norm_pix_loss, "Normalise target patches.")

# Data.
flags.DEFINE_string(
    "dataset", _DEFAULTS.dataset, "synthetic_objects, folder:/path/to/images or a TFDS name."
)
flags.DEFINE_string("data_dir", _DEFAULTS.data_dir, "Folder of prepared TFDS datasets.")
flags.DEFINE_string("split", _DEFAULTS.split, "Split, optionally sliced: train[:45000].")
flags.DEFINE_integer(
    "num_images",
    _DEFAULTS.num_images,
    "synthetic_objects: images generated (default 3072); other data: a cap (default all).",
)

# Optimisation.
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size (per step).")
flags.DEFINE_integer(
    "accum_steps",
    _DEFAULTS.accum_steps,
    "Steps whose gradients are averaged into one update: effective batch "
    "batch_size * accum_steps.",
)
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Training epochs.")
flags.DEFINE_integer(
    "steps_per_epoch", _DEFAULTS.steps_per_epoch, "Steps per epoch; default one pass."
)
flags.DEFINE_float(
    "blr", _DEFAULTS.blr, "Base learning rate: lr = blr * batch_size * accum_steps / 256."
)
flags.DEFINE_float("warmup_epochs", _DEFAULTS.warmup_epochs, "Linear warmup epochs.")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "AdamW weight decay.")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of every random choice.")
flags.DEFINE_boolean("bfloat16", False, "Train with the mixed_bfloat16 policy.")
flags.DEFINE_enum(
    "distribution",
    _DEFAULTS.distribution,
    list(training.DISTRIBUTIONS),
    "Data parallelism: auto, none, mirrored or multi_worker (TensorFlow), data_parallel (JAX).",
)
flags.DEFINE_string(
    "coordinator_address",
    _DEFAULTS.coordinator_address,
    "Multi-process JAX: host:port of process 0 (else KERAS_DISTRIBUTION_JOB_ADDRESSES).",
)
flags.DEFINE_integer(
    "num_processes",
    _DEFAULTS.num_processes,
    "Multi-process JAX: processes in all (else KERAS_DISTRIBUTION_NUM_PROCESSES).",
)
flags.DEFINE_integer(
    "process_id",
    _DEFAULTS.process_id,
    "Multi-process JAX: this process, 0 writes the files (else KERAS_DISTRIBUTION_PROCESS_ID).",
)
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA compilation.")

# Output.
flags.DEFINE_string("workdir", _DEFAULTS.workdir, "Folder of the run; reused to resume.")
flags.DEFINE_integer(
    "checkpoint_every_steps",
    _DEFAULTS.checkpoint_every_steps,
    "Checkpoint every this many steps as well as at epoch ends (0: epoch ends only).",
)
flags.DEFINE_integer("keep_checkpoints", _DEFAULTS.keep_checkpoints, "Checkpoints kept.")
flags.DEFINE_integer(
    "tensorboard_every_steps", _DEFAULTS.tensorboard_every_steps, "Steps between scalars."
)
flags.DEFINE_integer(
    "check_every_steps",
    _DEFAULTS.check_every_steps,
    "Steps between two reads of the loss by the host (NaN guard, healthy checkpoints); the "
    "steps between run without waiting for the device.",
)
flags.DEFINE_integer("lift_images", _DEFAULTS.lift_images, "Images for foreground lift.")
flags.DEFINE_enum("verbose", "auto", ["auto", "0", "1", "2"], "Keras fit verbosity.")
flags.DEFINE_boolean(
    "fresh",
    _DEFAULTS.fresh,
    "Start over in a workdir that holds an earlier run (its checkpoints or metrics); its "
    "outputs are moved to <workdir>/previous-<n>/, never deleted. Without it such a "
    "workdir resumes from its newest intact checkpoint, or is refused.",
)
flags.DEFINE_string(
    "init_from",
    _DEFAULTS.init_from,
    "Start from trained weights: an encoder preset (e.g. one converted from MAE's "
    "official weights with tools/convert_mae.py), a pretrainer preset (encoder, decoder "
    "and, when they fit, the ccMIM heads) or a pretraining workdir; a folder, kaggle:// or "
    "hf:// handle. Its architecture must match the run's (the image size may differ).",
)
flags.DEFINE_integer(
    "resume_from_step",
    _DEFAULTS.resume_from_step,
    "Train on from the checkpoint of this global step instead of the newest (after a NaN, "
    "the step the error names); later checkpoints are moved to "
    "<workdir>/checkpoints/abandoned-after-step-<step>/, never deleted. With it, --blr, "
    "--warmup_epochs, --weight_decay and --bfloat16 may differ from the checkpointed run's.",
)
flags.DEFINE_boolean(
    "allow_config_change",
    _DEFAULTS.allow_config_change,
    "Train on in a workdir whose checkpointed run had other settings that change what is "
    "trained (e.g. a longer --epochs); without it such a rerun is refused, naming each "
    "changed flag. config.json is updated.",
)

# Config fields whose flags differ in name or type; every other field is a
# flag of the same name.
_CONVERTED = ("mixed_precision", "jit_compile", "verbose")


def config_from_flags():
    values = {
        field.name: FLAGS[field.name].value
        for field in dataclasses.fields(training.PretrainConfig)
        if field.name not in _CONVERTED
    }
    values["mixed_precision"] = "bfloat16" if FLAGS.bfloat16 else "float32"
    values["jit_compile"] = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    values["verbose"] = "auto" if FLAGS.verbose == "auto" else int(FLAGS.verbose)
    return training.PretrainConfig(**values)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        with training.run_messages_to_stdout():  # the library logs; show it as before
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
