r"""Converts an official MAE (or public ccMIM) PyTorch checkpoint to this project's model.

    ccmim-convert-mae --checkpoint=mae_visualize_vit_large.pth \
        --output=converted/mae_vit_large

Writes a preset to `--output` (`config.json`, `model.weights.h5`,
`metadata.json`; keras-hub's layout): a `ViTEncoder` for MAE's encoder-only
`mae_pretrain_vit_*.pth`, a `CCMIMPretrainer` (encoder, decoder, and ccMIM's
projector where the file has one) when the file holds a decoder. Load it with
`ViTEncoder.from_preset(folder)` (an encoder) or
`keras_ccmim.conversion.load_converted(folder)`; the evaluation
binaries take it as `--workdir`, the main job as `--init_from`.
The architecture is read from the weights; the number of attention heads
from the file's args or the known ViT widths, else pass `--num_heads`. Needs
PyTorch to read a `.pth` (any Keras backend); a `.safetensors` state dict in
the same naming (timm's weights files, `ccmim-export-timm`'s) needs none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_ccmim.cli import console  # noqa: E402
from keras_ccmim.file_io import describe_os_error  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The MAE / ccMIM .pth or .safetensors file (required).")
flags.DEFINE_string("output", None, "Folder of the preset written (required).")
flags.DEFINE_integer("num_heads", None, "Encoder attention heads, when the file does not say.")
flags.DEFINE_integer("decoder_num_heads", None, "Decoder attention heads, likewise.")
flags.DEFINE_enum(
    "with_decoder", "auto", ["auto", "yes", "no"],
    "auto: a pretrainer when the file has the decoder, else the encoder; no: the encoder only.",
)
flags.DEFINE_boolean("overwrite", False, "Replace model.weights.h5 / config.json in --output.")


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        return console.fail(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        if not FLAGS.checkpoint or not FLAGS.output:
            raise ValueError("Pass --checkpoint=FILE.pth and --output=FOLDER.")
        from keras_ccmim import conversion

        model = conversion.convert_mae_checkpoint(
            FLAGS.checkpoint,
            num_heads=FLAGS.num_heads,
            decoder_num_heads=FLAGS.decoder_num_heads,
            with_decoder={"auto": "auto", "yes": True, "no": False}[FLAGS.with_decoder],
        )
        paths = conversion.save_converted(model, FLAGS.output, overwrite=FLAGS.overwrite)
        print(json.dumps({"model": type(model).__name__, **paths}))
    except OSError as error:
        return console.fail(describe_os_error(error))
    except (ValueError, ImportError) as error:
        return console.fail(error)
    return 0


def run() -> None:
    """The `ccmim-convert-mae` console script."""
    app.run(main, flags_parser=console.parse_flags)


if __name__ == "__main__":
    run()
