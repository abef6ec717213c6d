r"""Weighted k-NN accuracy of a frozen encoder (cosine, k=20, T=0.07).

    python evaluate/knn.py --workdir=runs/demo --output=runs/demo/knn.json
    python evaluate/knn.py --random_init --image_size=32 --num_layers=6   # baseline
    python evaluate/knn.py --workdir=runs/cifar10 --dataset=cifar10_jpeg \
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
flags.DEFINE_integer("k", 20, "Neighbours.")
flags.DEFINE_float("temperature", 0.07, "Temperature of the vote weights exp(sim / T).")

# Checked (finite, in range) before any work.
FLOAT_RANGES = {"temperature": "(0, inf)"}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        common.check_float_flags(FLOAT_RANGES)
        common.check_output_path(FLAGS.output)
        common.encoder_source(saved_model_input=True)  # checked before the slow imports
        from keras_ccmim import evaluation

        features = common.extract_train_and_eval_features(FLAGS.feature)
        results = evaluation.knn_classify(
            features.train_x,
            features.train_y,
            features.eval_x,
            features.eval_y,
            num_classes=features.num_classes,
            k=FLAGS.k,
            temperature=FLAGS.temperature,
        )
        results.update(
            protocol="knn",
            feature=FLAGS.feature,
            dataset=FLAGS.dataset,
            train_split=FLAGS.train_split,
            eval_split=FLAGS.eval_split,
            image_size=features.image_size,
            **common.describe_source(saved_model_input=True),
        )
        common.write_results(results)
    except (ValueError, OSError) as error:
        return common.fail(error)
    return 0


if __name__ == "__main__":
    app.run(main)
