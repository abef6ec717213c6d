r"""Fine-tunes a pretrained encoder end to end and reports top-1/top-5.

MAE / ccMIM's recipe by default (AdamW, layer-wise lr decay 0.65, drop path
0.1, RandAugment m9, random erasing 0.25, MixUp 0.8 / CutMix 1.0, label
smoothing 0.1, warmup 5 epochs + cosine, 100 epochs):

    python evaluate/finetune.py --workdir=runs/demo --epochs=20 \
        --output_dir=runs/demo/finetune --output=runs/demo/finetune.json
    python evaluate/finetune.py --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --train_split='train[:45000]' \
        --eval_split='train[45000:]' --output_dir=runs/cifar10/finetune

With --output_dir the run is checkpointed (<output_dir>/checkpoints/, at each
epoch end and every --checkpoint_every_steps) and rerunning the same command
resumes it from the newest intact checkpoint, on the batches and random draws
an uninterrupted run would have had; a rerun with other settings is refused,
naming the changed ones (--fresh starts over, moving the earlier files to
<output_dir>/previous-<n>/; nothing is deleted). The folder also gets the
fine-tuned classifier, <output_dir>/classifier.keras (Keras format:
`keras.saving.load_model(path)`), finetune_config.json, history.jsonl (per
epoch: training loss, top-1 / top-5 on --eval_split) and results.json.
Without --output_dir nothing is checkpointed or saved but --output.

The evaluation split is scored at each epoch end; the results (printed, and
in --output) hold the final top-1 / top-5 and the best epoch's (best_epoch,
1-based, best_top1, best_top5), with the per-epoch history.
"""

import os
import re
import sys

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evaluate import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_encoder_flags()
common.define_data_flags()
common.define_output_flag()
flags.DEFINE_integer("epochs", 100, "Fine-tuning epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default one pass.")
flags.DEFINE_float("warmup_epochs", 5, "Linear warmup epochs.")
flags.DEFINE_float("blr", 5e-4, "Base learning rate: lr = blr * batch_size / 256.")
flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay.")
flags.DEFINE_float("layer_decay", 0.65, "Layer-wise learning-rate decay.")
flags.DEFINE_float("drop_path", 0.1, "Stochastic depth rate.")
flags.DEFINE_float("rand_augment", 9, "RandAugment magnitude (0-10; 0 = off).")
flags.DEFINE_float("reprob", 0.25, "Random erasing probability.")
flags.DEFINE_float("mixup", 0.8, "MixUp alpha (0 = off).")
flags.DEFINE_float("cutmix", 1.0, "CutMix alpha (0 = off).")
flags.DEFINE_float("smoothing", 0.1, "Label smoothing.")
flags.DEFINE_enum("verbose", "0", ["0", "1", "2"], "Keras fit verbosity.")
flags.DEFINE_string(
    "output_dir", None,
    "Folder of the run: checkpoints, classifier.keras, history and results; rerunning the "
    "same command resumes it. Without it nothing is checkpointed or saved but --output.",
)
flags.DEFINE_boolean(
    "fresh", False,
    "Start over in an --output_dir that holds an earlier run; its files are moved to "
    "<output_dir>/previous-<n>/, never deleted.",
)
flags.DEFINE_integer(
    "checkpoint_every_steps", 0,
    "Checkpoint every this many steps as well as at epoch ends (0: epoch ends only).",
)
flags.DEFINE_integer("keep_checkpoints", 2, "Checkpoints kept.")
flags.DEFINE_integer(
    "check_every_steps", 20,
    "Steps between two reads of the loss by the host (NaN guard); the steps between run "
    "without waiting for the device.",
)

# Checked (finite, in range) before any work.
FLOAT_RANGES = {
    "warmup_epochs": "[0, epochs)",
    "blr": "(0, inf)",
    "weight_decay": "[0, inf)",
    "layer_decay": "(0, 1]",
    "drop_path": "[0, 1)",
    "rand_augment": "[0, 10]",
    "reprob": "[0, 1]",
    "mixup": "[0, inf)",
    "cutmix": "[0, inf)",
    "smoothing": "[0, 1)",
}

# The library's names of the flags whose names differ, for its messages.
FLAG_OF_ARGUMENT = {
    "base_learning_rate": "blr",
    "drop_path_rate": "drop_path",
    "rand_augment_magnitude": "rand_augment",
    "random_erasing_probability": "reprob",
    "mixup_alpha": "mixup",
    "cutmix_alpha": "cutmix",
    "label_smoothing": "smoothing",
}


def with_flag_names(error):
    """A refused rerun's error (`FinetuneConfigError`, which lists the
    changed fields by their library names) with the flags of the fields
    whose flags are named otherwise; any other error as it is."""
    module = sys.modules.get("keras_ccmim.evaluation.finetune_run")
    if module is None or not isinstance(error, module.FinetuneConfigError):
        return error
    text = str(error)
    named = [f"{arg} is --{flag}" for arg, flag in FLAG_OF_ARGUMENT.items() if f"{arg}:" in text]
    if re.search(r"\bencoder(_weights|\.\w+):", text):
        named.append("encoder_weights and encoder.* are the encoder's (--workdir, or "
                     "--random_init with its --seed and sizes)")
    if not named:
        return error
    return ValueError(f"{text} (Flags: {', '.join(named)}.)")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        common.check_float_flags(FLOAT_RANGES)
        common.check_output_path(FLAGS.output)
        if FLAGS.output_dir and os.path.exists(FLAGS.output_dir) and not os.path.isdir(
            FLAGS.output_dir
        ):
            raise ValueError(
                f"--output_dir {FLAGS.output_dir!r} is a file; pass a folder (created if "
                "missing)."
            )
        common.encoder_source()  # checked before the slow imports
        from keras_ccmim import evaluation
        from keras_ccmim.cli.console import run_messages_to_stdout

        encoder = common.load_encoder()
        with run_messages_to_stdout():  # the library logs resumes and restores
            result = evaluation.finetune(
                encoder,
                FLAGS.dataset,
                rand_augment_magnitude=FLAGS.rand_augment,
                random_erasing_probability=FLAGS.reprob,
                mixup_alpha=FLAGS.mixup,
                cutmix_alpha=FLAGS.cutmix,
                label_smoothing=FLAGS.smoothing,
                **common.fine_tuning_arguments(),
            )
        results = result.to_dict()
        results.update(
            protocol="finetune",
            dataset=FLAGS.dataset,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            layer_decay=FLAGS.layer_decay,
            drop_path=FLAGS.drop_path,
            **common.describe_source(),
        )
        common.write_results(results)
    except (ValueError, OSError) as error:
        return common.fail(with_flag_names(error))
    except FloatingPointError as error:  # the loss became NaN: the message says what to do
        common.fail(error)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
