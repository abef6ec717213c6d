"""Weights in and out of the PyTorch ecosystem's ViT naming (timm / MAE).

In: MAE's and the public ccMIM code's checkpoints become this project's
`ViTEncoder` or `CCMIMPretrainer` (`convert_mae_checkpoint`,
`tools/convert_mae.py`).

The parts, one concept each: reading and writing PyTorch weight files, which
are untrusted input (`torch_files`); the architecture read from a state dict
and the checks of its names and shapes (`mae_architecture`); where each
weight goes, torch layout <-> Keras layout (`weight_mapping`); building the
converted model and writing it as a preset (`convert_mae`).
"""

from keras_ccmim.conversion.convert_mae import (
    convert_mae_checkpoint,
    convert_mae_state_dict,
    load_converted,
    save_converted,
)
from keras_ccmim.conversion.mae_architecture import UnconvertedWeightsWarning
from keras_ccmim.conversion.torch_files import MAECheckpoint, load_mae_state_dict
