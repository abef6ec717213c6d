r"""Linear-probe accuracy of a frozen encoder: BatchNorm (no affine) + Dense.

The features are extracted once; the probe trains on them with SGD and
momentum (warmup + cosine).

    python evaluate/linear_probe.py --workdir=runs/demo --output=runs/demo/probe.json
    python evaluate/linear_probe.py --saved_model=runs/demo_saved_model
    python evaluate/linear_probe.py --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --train_split='train[:45000]' \
        --eval_split='train[45000:]'
"""

import os

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evaluate import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_encoder_flags(saved_model=True)
common.define_data_flags()
common.define_output_flag()
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        common.check_float_flags(FLOAT_RANGES)
        common.check_output_path(FLAGS.output)
        common.encoder_source(saved_model_input=True)  # checked before the slow imports
        from keras_ccmim import evaluation

        features = common.extract_train_and_eval_features(FLAGS.feature)
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
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            num_train=int(features.train_x.shape[0]),
            num_eval=int(features.eval_x.shape[0]),
            image_size=features.image_size,
            **common.describe_source(saved_model_input=True),
        )
        common.write_results(results)
    except (ValueError, OSError) as error:
        return common.fail(error)
    return 0


if __name__ == "__main__":
    app.run(main)
