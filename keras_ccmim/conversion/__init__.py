"""Weights in and out of the PyTorch ecosystem's ViT naming (timm / MAE).

In: MAE's and the public ccMIM code's checkpoints become this project's
`ViTEncoder` or `CCMIMPretrainer` (`convert_mae_checkpoint`,
`ccmim-convert-mae`). Out: a `ViTEncoder` becomes a timm `vit_*` / MAE
`mae_pretrain_vit_*` state dict, `.safetensors` or `.pth`, for PyTorch
detection and segmentation frameworks (`export_to_timm`,
`ccmim-export-timm`).

The parts, one concept each: reading and writing PyTorch weight files, which
are untrusted input (`torch_files`); the architecture read from a state dict
and the checks of its names and shapes (`mae_architecture`); where each
weight goes, torch layout <-> Keras layout (`weight_mapping`); building the
converted model and writing it as a preset (`convert_mae`); the export and
what its naming cannot express (`export_timm`).
"""

from keras_ccmim.conversion.convert_mae import (
    convert_mae_checkpoint,
    convert_mae_state_dict,
    load_converted,
    save_converted,
)
from keras_ccmim.conversion.export_timm import export_to_timm, timm_config, timm_state_dict
from keras_ccmim.conversion.mae_architecture import UnconvertedWeightsWarning
from keras_ccmim.conversion.torch_files import MAECheckpoint, load_mae_state_dict
