"""Exports a `ViTEncoder` to the PyTorch ecosystem's ViT naming: timm's
`vit_*` models and MAE's `mae_pretrain_vit_*` checkpoints share one state
dict (`cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.norm1`,
`attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`, `mlp.fc2`, `norm`), which
detection and segmentation frameworks load as a backbone.

    from keras_ccmim.conversion import export_to_timm

    export_to_timm("runs/demo", "exported/ccmim_vit_tiny.safetensors")

writes the weights, `.safetensors` (no pickle, no torch needed) or `.pth`
(`torch.save` of the state dict, readable with
`torch.load(..., weights_only=True)`), and beside them a JSON file with the
architecture as timm's `VisionTransformer` arguments, the LayerNorm epsilon
and the input normalisation. The binary is `ccmim-export-timm`; the
guide `docs/guides/export_to_pytorch.md` loads the result in timm.

Layouts are torch's (see `keras_ccmim.conversion.weight_mapping`); the fixed
sin-cos table is written as `pos_embed` `[1, 1+N, D]` with a zero [CLS] row,
as MAE writes it. The exported weights convert back with
`convert_mae_state_dict` to the same encoder.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from keras_ccmim.conversion.torch_files import save_state_dict, state_dict_format
from keras_ccmim.conversion.weight_mapping import encoder_state_dict, encoder_variables
from keras_ccmim.input_contract import IMAGENET_MEAN, IMAGENET_STD
from keras_ccmim.models.vit_encoder import load_encoder
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.file_io import write_json_atomically
from keras_ccmim.type_aliases import PathLike

NAMING = "timm vit_* / MAE mae_pretrain_vit_* state dict"


def _check_expressible(encoder):
    """Raises a one-line ValueError for what the naming cannot hold."""
    if encoder.layer_scale_init_value is not None:
        raise ValueError(
            f"Cannot export this encoder to timm / MAE naming: it uses LayerScale "
            f"(layer_scale_init_value={encoder.layer_scale_init_value:g}), which MAE's ViT and "
            "timm's default vit_* models have no weights for (no ls1/ls2 in their state "
            "dicts). Export an encoder trained without LayerScale."
        )
    mapped = {id(v) for _, v, _ in encoder_variables(encoder)}
    mapped |= {id(encoder.cls_token), id(encoder.position_embedding.embedding)}
    unmapped = [v.path for v in encoder.weights if id(v) not in mapped]
    if unmapped:
        raise ValueError(
            f"Cannot export this encoder to timm / MAE naming: its weights "
            f"{', '.join(unmapped)} have no name there. Export a plain ViTEncoder."
        )


def timm_state_dict(encoder: ViTEncoder) -> dict[str, np.ndarray]:
    """The encoder's weights in timm's `vit_*` / MAE's naming.

    Args:
        encoder: a built `ViTEncoder`.

    Returns:
        `{name: float32 np.ndarray}` in torch's layouts: `patch_embed.proj.weight`
        `[D, C, p, p]`, Linear weights `[out, in]`, `pos_embed` `[1, 1+N, D]`
        (zero [CLS] row), `cls_token` `[1, 1, D]`.

    Raises:
        ValueError: the encoder uses what the naming cannot express
            (LayerScale), one line naming it.
    """
    _check_expressible(encoder)
    return encoder_state_dict(encoder)


def timm_config(encoder: ViTEncoder) -> dict[str, Any]:
    """What the JSON beside the weights records: timm's `VisionTransformer`
    arguments that rebuild the architecture, the LayerNorm epsilon (timm's
    `norm_layer`), and the input normalisation (RGB in `[0, 1]`, then
    `(x - mean) / std`)."""
    normalisation = (
        {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        if encoder.num_channels == len(IMAGENET_MEAN)
        else {"mean": None, "std": None}
    )
    return {
        "naming": NAMING,
        "timm_kwargs": {
            "img_size": list(encoder.image_size),
            "patch_size": encoder.patch_size,
            "in_chans": encoder.num_channels,
            "embed_dim": encoder.hidden_dim,
            "depth": encoder.num_layers,
            "num_heads": encoder.num_heads,
            "mlp_ratio": encoder.mlp_ratio,
            "qkv_bias": encoder.qkv_bias,
        },
        "layer_norm_eps": encoder.layer_norm_epsilon,
        **normalisation,
        "pos_embed": "fixed 2-D sin-cos table, [CLS] row zero",
    }


def _encoder_of(source):
    if isinstance(source, ViTEncoder):
        if not source.built:
            raise ValueError(
                "The encoder is not built, so it holds no weights to export: load a trained "
                "one (ViTEncoder.from_preset(folder)) or pass a workdir or preset folder."
            )
        return source
    if isinstance(source, (str, os.PathLike)):
        return load_encoder(source)
    raise ValueError(
        f"Cannot export a {type(source).__name__}: pass a ViTEncoder, a pretraining workdir "
        "or an encoder preset folder or handle."
    )


def export_to_timm(
    source: ViTEncoder | PathLike, output: PathLike, overwrite: bool = False
) -> dict[str, str]:
    """Writes an encoder's weights in timm's `vit_*` / MAE's naming, and a
    JSON file of its architecture beside them.

    Args:
        source: a built `ViTEncoder`, a pretraining workdir (its `encoder/`
            preset) or an encoder preset folder or handle.
        output: the weights file. Its suffix picks the format:
            `.safetensors` (the default, added when the name has no suffix)
            or `.pth`. The JSON is the same name with `.json`.
        overwrite: replace existing files of those names. A JSON that
            already says exactly what would be written is kept without it
            (exporting both formats to one name).

    Returns:
        `{"weights": path, "config": path}`.

    Raises:
        ValueError: an encoder the naming cannot express, another suffix,
            files in the way; one line each.
        ImportError: `.pth` without PyTorch installed.
    """
    output = os.fspath(output)
    stem, suffix = os.path.splitext(output)
    if not suffix:
        stem, suffix = output, ".safetensors"
    file_format = state_dict_format(stem + suffix)
    weights, config_path = stem + suffix, stem + ".json"
    if os.path.isdir(weights):
        raise ValueError(f"{weights!r} is a folder: pass the weights file's path, e.g. "
                         f"{os.path.join(weights, 'encoder.safetensors')!r}.")
    encoder = _encoder_of(source)
    state = timm_state_dict(encoder)
    config = timm_config(encoder)
    same_config = _json_equals(config_path, config)
    in_the_way = [p for p in (weights, config_path) if os.path.exists(p)]
    if same_config:
        in_the_way.remove(config_path)
    if in_the_way and not overwrite:
        raise ValueError(
            f"{' and '.join(in_the_way)} already exist{'s' if len(in_the_way) == 1 else ''}: "
            "choose another output name or pass overwrite=True (the binary's --overwrite)."
        )
    folder = os.path.dirname(weights)
    if folder:
        os.makedirs(folder, exist_ok=True)
    save_state_dict(state, weights, file_format)
    if not same_config:
        write_json_atomically(config_path, config)
    return {"weights": weights, "config": config_path}


def _json_equals(path, data):
    """Whether `path` is a JSON file holding exactly `data`."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return json.load(f) == data
    except (OSError, ValueError):
        return False
