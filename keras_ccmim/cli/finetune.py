r"""`ccmim-finetune`: fine-tunes a pretrained encoder end to end as a
classifier and reports top-1/top-5.

MAE / ccMIM's recipe by default (AdamW, layer-wise lr decay 0.65, drop path
0.1, RandAugment m9, random erasing 0.25, MixUp 0.8 / CutMix 1.0, label
smoothing 0.1, warmup 5 epochs + cosine, 100 epochs):

    ccmim-finetune --workdir=runs/demo --epochs=20 \
        --output_dir=runs/demo/finetune --output=runs/demo/finetune.json
    ccmim-finetune --workdir=runs/cifar10 --dataset=cifar10_jpeg \
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
Without --output_dir nothing is checkpointed or saved but --output. Neither
may lie inside the workdir of a running pretraining.

The evaluation split is scored at each epoch end; the results (printed, and
in --output) hold the final top-1 / top-5 and the best epoch's (best_epoch,
1-based, best_top1, best_top5), with the per-epoch history. A dataset
without a `test` split (an image folder) holds out `train[80%:]` for the
evaluation and fine-tunes on `train[:80%]`. From a checkout,
`python evaluate/finetune.py` is the same program.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from keras_ccmim.cli import console, evaluation_flags

FLAGS = flags.FLAGS
evaluation_flags.define_encoder_flags()
evaluation_flags.define_data_flags()
evaluation_flags.define_output_flag()
evaluation_flags.define_fine_tuning_flags(
    epochs=100, warmup_epochs=5, blr=5e-4, lr_batch_size=256, verbose="0",
    outputs="classifier.keras, history and results",
)
flags.DEFINE_float("rand_augment", 9, "RandAugment magnitude (0-10; 0 = off).")
flags.DEFINE_float("reprob", 0.25, "Random erasing probability.")
flags.DEFINE_float("mixup", 0.8, "MixUp alpha (0 = off).")
flags.DEFINE_float("cutmix", 1.0, "CutMix alpha (0 = off).")
flags.DEFINE_float("smoothing", 0.1, "Label smoothing.")

# Checked (finite, in range) before any work.
FLOAT_RANGES = {
    **evaluation_flags.FINE_TUNING_RANGES,
    "rand_augment": "[0, 10]",
    "reprob": "[0, 1]",
    "mixup": "[0, inf)",
    "cutmix": "[0, inf)",
    "smoothing": "[0, 1)",
}

# The library's names of the flags whose names differ, for its messages.
FLAG_OF_ARGUMENT = {
    **evaluation_flags.FLAG_OF_ARGUMENT,
    "rand_augment_magnitude": "rand_augment",
    "random_erasing_probability": "reprob",
    "mixup_alpha": "mixup",
    "cutmix_alpha": "cutmix",
    "label_smoothing": "smoothing",
}


def main(argv: Sequence[str]) -> int:
    try:
        evaluation_flags.check_no_arguments(argv)
        evaluation_flags.check_float_flags(FLOAT_RANGES)
        evaluation_flags.check_output_path(FLAGS.output)
        evaluation_flags.check_output_dir(FLAGS.output_dir)
        evaluation_flags.encoder_source()  # checked before the slow imports
        train_split, eval_split = evaluation_flags.choose_splits()
        from keras_ccmim import evaluation

        encoder = evaluation_flags.load_encoder()
        with console.run_messages_to_stdout():  # the library logs resumes and restores
            result = evaluation.finetune(
                encoder,
                FLAGS.dataset,
                rand_augment_magnitude=FLAGS.rand_augment,
                random_erasing_probability=FLAGS.reprob,
                mixup_alpha=FLAGS.mixup,
                cutmix_alpha=FLAGS.cutmix,
                label_smoothing=FLAGS.smoothing,
                **evaluation_flags.fine_tuning_arguments(train_split, eval_split),
            )
        results = result.to_dict()
        results.update(
            protocol="finetune",
            dataset=FLAGS.dataset,
            train_split=train_split,
            eval_split=eval_split,
            layer_decay=FLAGS.layer_decay,
            drop_path=FLAGS.drop_path,
            **evaluation_flags.describe_source(),
        )
        evaluation_flags.write_results(results)
    except (ValueError, OSError) as error:
        return evaluation_flags.report_error(
            evaluation_flags.with_flag_names(error, FLAG_OF_ARGUMENT))
    except FloatingPointError as error:  # the loss became NaN: the message says what to do
        return evaluation_flags.report_error(error, code=1)
    return 0


def run() -> None:
    """The console script `ccmim-finetune`."""
    evaluation_flags.run_program(main, __doc__)
