r"""Exports a trained encoder to timm's `vit_*` / MAE's `mae_pretrain_vit_*` state dict.

    ccmim-export-timm --source=runs/demo \
        --output=exported/ccmim_vit_tiny.safetensors

`--source` is a pretraining workdir (its `encoder/` preset) or an encoder
preset folder or handle. The output's suffix picks the format: `.safetensors`
(the default, added to a name without suffix; needs no torch) or `.pth`
(`torch.save`, readable with `torch.load(..., weights_only=True)`; needs
torch). Beside it, `<name>.json` records the architecture as timm's
`VisionTransformer` arguments, the LayerNorm epsilon and the input
normalisation. docs/guides/export_to_pytorch.md loads the result in timm
and in detection and segmentation frameworks.
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
flags.DEFINE_string("source", None, "Pretraining workdir or encoder preset (required).")
flags.DEFINE_string("output", None, "The weights file, .safetensors or .pth (required).")
flags.DEFINE_boolean("overwrite", False, "Replace the weights and JSON files of that name.")


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        return console.fail(f"Unexpected arguments: {' '.join(argv[1:])}. Use --flag=value.")
    try:
        if not FLAGS.source or not FLAGS.output:
            raise ValueError("Pass --source=WORKDIR_OR_PRESET and --output=FILE.safetensors.")
        from keras_ccmim import conversion

        paths = conversion.export_to_timm(FLAGS.source, FLAGS.output, overwrite=FLAGS.overwrite)
        print(json.dumps(paths))
    except OSError as error:
        return console.fail(describe_os_error(error))
    except (ValueError, ImportError) as error:
        return console.fail(error)
    return 0


def run() -> None:
    """The `ccmim-export-timm` console script."""
    app.run(main, flags_parser=console.parse_flags)


if __name__ == "__main__":
    run()
