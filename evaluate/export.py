r"""Exports a pretrained encoder as a standalone TensorFlow SavedModel.

    python evaluate/export.py --workdir=runs/demo --saved_model=runs/demo_saved_model

The SavedModel takes images `[B, H, W, 3]` (`serve`: float32 in [0, 1];
`serve_uint8`: uint8) at the encoder's image size, refusing any other, and
returns `cls`, `mean_patch` and `patch_tokens`; ImageNet normalisation is
inside. Load it with `tf.saved_model.load` alone.
Works under every backend (torch exports through a TensorFlow subprocess).

The target must be new or empty; `--overwrite` replaces an existing
SavedModel there (a folder holding a SavedModel and nothing else), never
other files. It may not be, hold, or lie inside the `--workdir`. The
SavedModel is written beside the target and renamed into place when
complete, so an interrupted export leaves the old one as it was; the next
export removes what a killed one left beside the target.
"""

import os

from absl import app, flags

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
flags.DEFINE_boolean(
    "overwrite",
    False,
    "Replace an existing SavedModel at --saved_model (only a folder holding a "
    "SavedModel and nothing else; other files are never replaced).",
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        if not FLAGS.saved_model:
            raise ValueError("Pass --saved_model=FOLDER, where the SavedModel is written.")
        common.check_output_path(FLAGS.output)
        common.encoder_source()  # checked before the slow imports
        from keras_ccmim.evaluation import export

        protected = [FLAGS.workdir] if FLAGS.workdir else []
        export.check_export_target(FLAGS.saved_model, FLAGS.overwrite, protected)
        encoder = common.load_encoder()
        path = export.export_saved_model(
            encoder,
            FLAGS.saved_model,
            method=FLAGS.method,
            overwrite=FLAGS.overwrite,
            protected=protected,
        )
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
    except (ValueError, OSError) as error:
        return common.fail(error)
    return 0


if __name__ == "__main__":
    app.run(main)
