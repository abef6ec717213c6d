r"""`ccmim-segment`: fine-tunes an encoder for semantic segmentation and
reports mIoU, aAcc and mAcc.

A `ViTSegmenter` (4 evenly spaced blocks, ViTDet's simple feature pyramid,
a light FPN head) over the encoder of a pretraining --workdir, an encoder
preset (also --workdir) or --random_init; layer-wise lr decay 0.65, drop
path 0.1, AdamW, warmup then cosine
(`keras_ccmim.evaluation.finetune_segmenter`):

    ccmim-segment --workdir=runs/demo --epochs=10 \
        --output_dir=runs/demo/segment --output=runs/demo/segment.json
    ccmim-segment --workdir=runs/demo --dataset=oxford_iiit_pet \
        --data_dir=/data/tfds --eval_split=test --segment_image_size=224 \
        --batch_size=16

Datasets: synthetic_objects (built in: background + 10 shapes),
oxford_iiit_pet (pet / background, the trimap border ignored),
scene_parse150 or ade20k (150 classes, "other" ignored), or
folder:<root> (<root>/images + <root>/masks PNGs; pass --num_classes). A
dataset without a `test` split (a folder without <root>/test/images) holds
out `train[80%:]` for the evaluation and fine-tunes on `train[:80%]`.

With --output_dir the run is checkpointed (<output_dir>/checkpoints/) and
rerunning the same command resumes it; other settings are refused, naming
the changed ones (--fresh starts over, moving the earlier files to
<output_dir>/previous-<n>/). The folder also gets segmenter.keras,
predictions.png (image | ground truth | prediction), history.jsonl,
segment_config.json and results.json. --output gets the metrics JSON.
Neither may lie inside the workdir of a running pretraining.

The linear probe of dense transfer (the encoder frozen, a linear map from
each patch's features to its pixels' logits; a convex problem, so it scores
the features rather than the run):

    ccmim-segment --workdir=runs/demo --head=linear --freeze_encoder \
        --blr=1e-2 --weight_decay=0 --batch_size=64 --epochs=2

From a checkout, `python evaluate/segment.py` is the same program.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from keras_ccmim.cli import console, evaluation_flags

FLAGS = flags.FLAGS
evaluation_flags.define_encoder_flags()
evaluation_flags.define_data_flags(batch_size=16)
evaluation_flags.define_output_flag()
evaluation_flags.define_fine_tuning_flags(
    epochs=20, warmup_epochs=1, blr=1e-4, lr_batch_size=16, verbose="1",
    outputs="segmenter.keras, predictions.png, history and results",
)
flags.DEFINE_integer("num_classes", None, "Classes (background included); default the "
                     "dataset's. Needed for folder:<root>.")
flags.DEFINE_integer("segment_image_size", None,
                     "Input size of the segmenter; default the encoder's. Any multiple of "
                     "the patch size (the position table is recomputed).")
flags.DEFINE_integer("head_dim", 64, "Channels of the FPN head.")
flags.DEFINE_enum("head", "fpn", ["fpn", "linear"], "fpn: simple feature pyramid + FPN head; "
                  "linear: a linear map from each patch's features to its pixels' logits.")
flags.DEFINE_boolean("freeze_encoder", False, "Train the head alone over the fixed encoder "
                     "(with --head=linear: the linear probe of dense transfer).")
flags.DEFINE_integer("num_pictures", 4, "Images in predictions.png (0: none).")

# The library's names of the flags whose names differ, for its messages.
FLAG_OF_ARGUMENT = {**evaluation_flags.FLAG_OF_ARGUMENT, "image_size": "segment_image_size"}


def main(argv: Sequence[str]) -> int:
    try:
        evaluation_flags.check_no_arguments(argv)
        evaluation_flags.check_float_flags(evaluation_flags.FINE_TUNING_RANGES)
        evaluation_flags.check_output_path(FLAGS.output)
        evaluation_flags.check_output_dir(FLAGS.output_dir)
        evaluation_flags.encoder_source()  # checked before the slow imports
        train_split, eval_split = evaluation_flags.choose_splits(segmentation=True)
        from keras_ccmim.evaluation.segmentation import finetune_segmenter

        with console.run_messages_to_stdout():  # the library logs resumes and restores
            result = finetune_segmenter(
                evaluation_flags.load_encoder(),
                FLAGS.dataset,
                image_size=FLAGS.segment_image_size,
                num_classes=FLAGS.num_classes,
                head_dim=FLAGS.head_dim,
                head=FLAGS.head,
                freeze_encoder=FLAGS.freeze_encoder,
                num_pictures=FLAGS.num_pictures,
                **evaluation_flags.fine_tuning_arguments(train_split, eval_split),
            )
        results = result.to_dict()
        results.update(protocol="segment", head=FLAGS.head, freeze_encoder=FLAGS.freeze_encoder,
                       dataset=FLAGS.dataset, train_split=train_split, eval_split=eval_split,
                       **evaluation_flags.describe_source())
        evaluation_flags.write_results(results)
    except (ValueError, OSError) as error:
        return evaluation_flags.report_error(
            evaluation_flags.with_flag_names(error, FLAG_OF_ARGUMENT))
    except FloatingPointError as error:  # the loss became NaN: the message says what to do
        return evaluation_flags.report_error(error, code=1)
    return 0


def run() -> None:
    """The console script `ccmim-segment`."""
    evaluation_flags.run_program(main, __doc__)
