r"""Fine-tunes a pretrained encoder end to end and reports top-1/top-5.

MAE / ccMIM's recipe by default (AdamW, layer-wise lr decay 0.65, drop path
0.1, RandAugment m9, random erasing 0.25, MixUp 0.8 / CutMix 1.0, label
smoothing 0.1, warmup 5 epochs + cosine, 100 epochs):

    python evaluate/finetune.py --workdir=runs/demo --epochs=20 \
        --output=runs/demo/finetune.json
    python evaluate/finetune.py --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --train_split='train[:45000]' \
        --eval_split='train[45000:]'
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        common.check_float_flags(FLOAT_RANGES)
        common.check_output_path(FLAGS.output)
        common.encoder_source()  # checked before the slow imports
        from keras_ccmim import evaluation

        encoder = common.load_encoder()
        result = evaluation.finetune(
            encoder,
            FLAGS.dataset,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            data_dir=FLAGS.data_dir,
            train_num_images=FLAGS.train_num_images,
            eval_num_images=FLAGS.eval_num_images,
            epochs=FLAGS.epochs,
            steps_per_epoch=FLAGS.steps_per_epoch,
            warmup_epochs=FLAGS.warmup_epochs,
            batch_size=FLAGS.batch_size,
            base_learning_rate=FLAGS.blr,
            weight_decay=FLAGS.weight_decay,
            layer_decay=FLAGS.layer_decay,
            drop_path_rate=FLAGS.drop_path,
            rand_augment_magnitude=FLAGS.rand_augment,
            random_erasing_probability=FLAGS.reprob,
            mixup_alpha=FLAGS.mixup,
            cutmix_alpha=FLAGS.cutmix,
            label_smoothing=FLAGS.smoothing,
            seed=FLAGS.seed,
            verbose=int(FLAGS.verbose),
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
        return common.fail(error)
    return 0


if __name__ == "__main__":
    app.run(main)
