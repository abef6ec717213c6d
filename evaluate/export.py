r"""Exports a pretrained encoder as a standalone TensorFlow SavedModel.

    python evaluate/export.py --workdir=runs/demo --saved_model=runs/demo/saved_model

The SavedModel takes images `[B, H, W, 3]` (`serve`: float32 in [0, 1];
`serve_uint8`: uint8) and returns `cls`, `mean_patch` and `patch_tokens`;
ImageNet normalisation is inside. Load it with `tf.saved_model.load` alone.
Works under every backend (torch exports through a TensorFlow subprocess).
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from evaluate import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_encoder_flags()
common.define_output_flag()
flags.DEFINE_string("saved_model", None, "Output SavedModel folder (required).")
flags.DEFINE_enum(
    "method",
    "auto",
    ["auto", "archive", "tensorflow_subprocess"],
    "How to write it: Keras' ExportArchive in process (TensorFlow, JAX), a "
    "TensorFlow-backend subprocess (any backend), or auto (see "
    "keras_ccmim.evaluation.export).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        if not FLAGS.saved_model:
            raise ValueError("Pass --saved_model=FOLDER, where the SavedModel is written.")
        common.encoder_source()  # checked before the slow imports
        from keras_ccmim import evaluation

        encoder = common.load_encoder()
        path = evaluation.export_saved_model(encoder, FLAGS.saved_model, method=FLAGS.method)
    except ValueError as error:
        return common.fail(error)
    common.write_results(
        {
            "saved_model": path,
            "image_size": list(encoder.image_size),
            "hidden_dim": encoder.hidden_dim,
            "num_patches": encoder.num_patches,
            "endpoints": {"serve": "float32 in [0, 1]", "serve_uint8": "uint8"},
            **common.describe_source(),
        }
    )
    return 0


if __name__ == "__main__":
    app.run(main)
