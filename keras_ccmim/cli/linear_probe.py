r"""`ccmim-linear-probe`: linear-probe accuracy of a frozen encoder,
BatchNorm (no affine) + Dense.

The features are extracted once; the probe trains on them with SGD and
momentum (warmup + cosine).

    ccmim-linear-probe --workdir=runs/demo --output=runs/demo/probe.json
    ccmim-linear-probe --saved_model=runs/demo_saved_model
    ccmim-linear-probe --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --train_split='train[:45000]' \
        --eval_split='train[45000:]'

A dataset without a `test` split (an image folder) holds out `train[80%:]`
for the evaluation and trains the probe on `train[:80%]`. From a checkout,
`python evaluate/linear_probe.py` is the same program.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import flags

from keras_ccmim.cli import evaluation_flags

FLAGS = flags.FLAGS
evaluation_flags.define_encoder_flags(saved_model=True)
evaluation_flags.define_data_flags()
evaluation_flags.define_output_flag()
flags.DEFINE_enum("feature", "mean_patch", ["mean_patch", "cls"], "Image feature.")
flags.DEFINE_integer("epochs", 90, "Probe training epochs over the features.")
flags.DEFINE_integer("probe_batch_size", 256, "Probe training batch size.")
flags.DEFINE_float("blr", 0.1, "Base learning rate: lr = blr * probe_batch_size / 256.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float("weight_decay", 0.0, "SGD weight decay.")
flags.DEFINE_float("warmup_epochs", 10, "Linear warmup epochs.")

# Checked (finite, in range) before any work.
FLOAT_RANGES = {
    "blr": "(0, inf)",
    "momentum": "[0, 1)",
    "weight_decay": "[0, inf)",
    "warmup_epochs": "[0, inf)",  # capped below --epochs
}


def main(argv: Sequence[str]) -> int:
    try:
        evaluation_flags.check_no_arguments(argv)
        evaluation_flags.check_float_flags(FLOAT_RANGES)
        evaluation_flags.check_output_path(FLAGS.output)
        evaluation_flags.encoder_source(saved_model_input=True)  # before the slow imports
        train_split, eval_split = evaluation_flags.choose_splits()
        from keras_ccmim import evaluation

        features = evaluation_flags.extract_train_and_eval_features(
            FLAGS.feature, train_split, eval_split)
        result = evaluation.linear_probe(
            features.train_x,
            features.train_y,
            features.eval_x,
            features.eval_y,
            num_classes=features.num_classes,
            epochs=FLAGS.epochs,
            batch_size=FLAGS.probe_batch_size,
            base_learning_rate=FLAGS.blr,
            momentum=FLAGS.momentum,
            weight_decay=FLAGS.weight_decay,
            warmup_epochs=FLAGS.warmup_epochs,
            seed=FLAGS.seed,
        )
        results = result.to_dict()
        results.update(
            protocol="linear_probe",
            feature=FLAGS.feature,
            dataset=FLAGS.dataset,
            train_split=train_split,
            eval_split=eval_split,
            num_train=int(features.train_x.shape[0]),
            num_eval=int(features.eval_x.shape[0]),
            image_size=features.image_size,
            **evaluation_flags.describe_source(saved_model_input=True),
        )
        evaluation_flags.write_results(results)
    except (ValueError, OSError) as error:
        return evaluation_flags.report_error(error)
    return 0


def run() -> None:
    """The console script `ccmim-linear-probe`."""
    evaluation_flags.run_program(main, __doc__)
