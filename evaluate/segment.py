r"""Fine-tunes an encoder for semantic segmentation; reports mIoU, aAcc, mAcc.

A `ViTSegmenter` (4 evenly spaced blocks, ViTDet's simple feature pyramid,
a light FPN head) over the encoder of a pretraining --workdir, an encoder
preset (also --workdir) or --random_init; layer-wise lr decay 0.65, drop
path 0.1, AdamW, warmup then cosine:

    python evaluate/segment.py --workdir=runs/demo --epochs=10 \
        --output_dir=runs/demo/segment --output=runs/demo/segment.json
    python evaluate/segment.py --workdir=runs/demo --dataset=oxford_iiit_pet \
        --data_dir=/data/tfds --eval_split=test --image_size=224 --batch_size=16

Datasets: synthetic_objects (built in: background + 10 shapes),
oxford_iiit_pet (pet / background, the trimap border ignored),
scene_parse150 or ade20k (150 classes, "other" ignored), or
folder:<root> (<root>/images + <root>/masks PNGs; pass --num_classes).

With --output_dir the run is checkpointed (<output_dir>/checkpoints/) and
rerunning the same command resumes it; other settings are refused, naming
the changed ones (--fresh starts over, moving the earlier files to
<output_dir>/previous-<n>/). The folder also gets segmenter.keras,
predictions.png (image | ground truth | prediction), history.jsonl,
segment_config.json and results.json. --output gets the metrics JSON.

The linear probe of dense transfer (the encoder frozen, a linear map from
each patch's features to its pixels' logits; a convex problem, so it scores
the features rather than the run):

    python evaluate/segment.py --workdir=runs/demo --head=linear --freeze_encoder \
        --blr=1e-2 --weight_decay=0 --batch_size=64 --epochs=2
"""

import os

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evaluate import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_encoder_flags()
common.define_data_flags()
common.define_output_flag()
FLAGS.set_default("batch_size", 16)
flags.DEFINE_integer("num_classes", None, "Classes (background included); default the "
                     "dataset's. Needed for folder:<root>.")
flags.DEFINE_integer("segment_image_size", None,
                     "Input size of the segmenter; default the encoder's. Any multiple of "
                     "the patch size (the position table is recomputed).")
flags.DEFINE_integer("epochs", 20, "Fine-tuning epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default one pass.")
flags.DEFINE_float("warmup_epochs", 1, "Linear warmup epochs.")
flags.DEFINE_float("blr", 1e-4, "Base learning rate: lr = blr * batch_size / 16.")
flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay.")
flags.DEFINE_float("layer_decay", 0.65, "Layer-wise learning-rate decay.")
flags.DEFINE_float("drop_path", 0.1, "Stochastic depth rate.")
flags.DEFINE_integer("head_dim", 64, "Channels of the FPN head.")
flags.DEFINE_enum("head", "fpn", ["fpn", "linear"], "fpn: simple feature pyramid + FPN head; "
                  "linear: a linear map from each patch's features to its pixels' logits.")
flags.DEFINE_boolean("freeze_encoder", False, "Train the head alone over the fixed encoder "
                     "(with --head=linear: the linear probe of dense transfer).")
flags.DEFINE_integer("num_pictures", 4, "Images in predictions.png (0: none).")
flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity (1: progress bar).")
flags.DEFINE_string("output_dir", None, "Folder of the run: checkpoints, segmenter.keras, "
                    "predictions.png, history and results; rerunning resumes it.")
flags.DEFINE_boolean("fresh", False, "Start over in an --output_dir that holds an earlier "
                     "run; its files are moved to <output_dir>/previous-<n>/.")
flags.DEFINE_integer("checkpoint_every_steps", 0,
                     "Checkpoint every this many steps as well as at epoch ends.")
flags.DEFINE_integer("keep_checkpoints", 2, "Checkpoints kept.")
flags.DEFINE_integer("check_every_steps", 20, "Steps between two reads of the loss (NaN "
                     "guard).")

FLOAT_RANGES = {
    "warmup_epochs": "[0, epochs)",
    "blr": "(0, inf)",
    "weight_decay": "[0, inf)",
    "layer_decay": "(0, 1]",
    "drop_path": "[0, 1)",
}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        common.check_float_flags(FLOAT_RANGES)
        common.check_output_path(FLAGS.output)
        if FLAGS.output_dir and os.path.exists(FLAGS.output_dir) and not os.path.isdir(
            FLAGS.output_dir
        ):
            raise ValueError(f"--output_dir {FLAGS.output_dir!r} is a file; pass a folder "
                             "(created if missing).")
        common.encoder_source()  # checked before the slow imports
        from keras_ccmim.evaluation.segmentation import finetune_segmenter
        from keras_ccmim.cli.console import run_messages_to_stdout

        with run_messages_to_stdout():  # the library logs resumes and restores
            result = finetune_segmenter(
                common.load_encoder(),
                FLAGS.dataset,
                image_size=FLAGS.segment_image_size,
                num_classes=FLAGS.num_classes,
                head_dim=FLAGS.head_dim,
                head=FLAGS.head,
                freeze_encoder=FLAGS.freeze_encoder,
                num_pictures=FLAGS.num_pictures,
                **common.fine_tuning_arguments(),
            )
        results = result.to_dict()
        results.update(protocol="segment", head=FLAGS.head, freeze_encoder=FLAGS.freeze_encoder,
                       dataset=FLAGS.dataset,
                       train_split=FLAGS.train_split, eval_split=FLAGS.eval_split,
                       **common.describe_source())
        common.write_results(results)
    except (ValueError, OSError) as error:
        return common.fail(error)
    except FloatingPointError as error:
        common.fail(error)
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
