r"""`ccmim-knn`: weighted k-NN accuracy of a frozen encoder (cosine, k=20, T=0.07).

    ccmim-knn --workdir=runs/demo --output=runs/demo/knn.json
    ccmim-knn --random_init --image_size=32 --num_layers=6   # baseline
    ccmim-knn --workdir=runs/cifar10 --dataset=cifar10_jpeg \
        --data_dir=../shared/data/tfds --train_split='train[:45000]' \
        --eval_split='train[45000:]'
    ccmim-knn --workdir=runs/mine --dataset=folder:/path/to/images

The bank is --train_split, the queries --eval_split; a dataset without a
`test` split (an image folder) holds out `train[80%:]` for the queries and
banks `train[:80%]`. From a checkout, `python evaluate/knn.py` is the same
program.
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
flags.DEFINE_integer("k", 20, "Neighbours.")
flags.DEFINE_float("temperature", 0.07, "Temperature of the vote weights exp(sim / T).")

# Checked (finite, in range) before any work.
FLOAT_RANGES = {"temperature": "(0, inf)"}


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
            train_split=train_split,
            eval_split=eval_split,
            image_size=features.image_size,
            **evaluation_flags.describe_source(saved_model_input=True),
        )
        evaluation_flags.write_results(results)
    except (ValueError, OSError) as error:
        return evaluation_flags.report_error(error)
    return 0


def run() -> None:
    """The console script `ccmim-knn`."""
    evaluation_flags.run_program(main, __doc__)
