"""Converts the official MAE PyTorch checkpoints (and the public ccMIM code's)
into this project's `ViTEncoder` or `CCMIMPretrainer`.

The inputs are MAE's `mae_pretrain_vit_{base,large,huge}.pth` (encoder only)
and `mae_visualize_vit_*.pth` (encoder and decoder), state dicts in timm's
naming under the key `"model"`, often beside the training `argparse.Namespace`
under `"args"`. The public ccMIM code saves the same names plus its projector
(`projector.{0,1,3,4}.*`, a torch `nn.Sequential`), possibly behind a
`module.` prefix.

    from keras_ccmim.conversion import load_mae_state_dict, save_converted

    checkpoint = load_mae_state_dict("mae_visualize_vit_large.pth")
    model = convert_mae_state_dict(checkpoint.state_dict, args=checkpoint.args)
    save_converted(model, "converted/mae_vit_large")

or `convert_mae_checkpoint(path)` for the first two steps, or the binary
`ccmim-convert-mae`.

Both MAE and the project use the exact (erf) GELU in the MLP and pre-norm
blocks with a biased qkv projection, so a converted encoder computes MAE's
function (tests/conversion/test_convert_mae.py checks it against an
independent torch forward on every backend).

This module builds the model and writes it as a preset (`save_converted`);
reading the file is `keras_ccmim.conversion.torch_files`, the architecture
and its name checks `mae_architecture`, where each weight goes
`weight_mapping`.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from keras_ccmim.conversion.mae_architecture import (
    array_shape,
    block_indices,
    block_shapes,
    check_shapes,
    key_family,
    listing,
    patch_grid,
    projector_layout,
    require_keys,
    resolve_heads,
    strip_prefix,
    warn_unconverted,
)
from keras_ccmim.conversion.torch_files import load_mae_state_dict
from keras_ccmim.conversion.weight_mapping import (
    assign_weights,
    load_decoder_weights,
    load_encoder_weights,
    projector_assignments,
)
from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.preset_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_from_preset,
    save_to_preset,
)
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)


def convert_mae_state_dict(
    state_dict: Mapping[str, np.ndarray],
    *,
    args: Mapping[str, Any] | argparse.Namespace | None = None,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    image_size: int | Sequence[int] | None = None,
    with_decoder: Literal["auto"] | bool = "auto",
    layer_norm_epsilon: float = 1e-6,
    pretrainer_kwargs: Mapping[str, Any] | None = None,
    prefix: str | None = None,
    position_embedding_atol: float = 1e-4,
) -> ViTEncoder | CCMIMPretrainer:
    """Builds this project's model from an MAE / ccMIM state dict.

    The architecture is read from the weights: width `D`, channels and patch
    size from `patch_embed.proj.weight`; depth from the `blocks.{i}` indices;
    the MLP ratio from `blocks.0.mlp.fc1.weight`; the patch grid (and, unless
    given, the image size) from `pos_embed`; the decoder's width, depth and
    output from `decoder_embed`, `decoder_blocks.{i}` and `decoder_pred`.
    Attention heads are not in the weights: `num_heads` when given, else the
    file's `args` (`args.num_heads`, or the size in `args.model` such as
    `"mae_vit_large_patch16"`), else the project's preset for that width
    (192 -> 3, 384 -> 6, 768 -> 12, 1024 -> 16, 1280 -> 16; decoders 512 -> 16,
    128 -> 4).

    Args:
        state_dict: `{name: array}` in timm / MAE naming (numpy arrays, e.g.
            `load_mae_state_dict(path).state_dict`). A common prefix such as
            `module.` is found from `cls_token` and removed.
        args: the checkpoint's training arguments (a dict or
            `argparse.Namespace`), used for the heads and, for a pretrainer,
            `mask_ratio` and `norm_pix_loss`.
        num_heads: encoder heads, overriding what `args` say.
        decoder_num_heads: decoder heads, likewise.
        image_size: int or `(H, W)` to build the model at; default: the
            checkpoint's grid times the patch size. Another size works (the
            sin-cos tables are recomputed for its grid).
        with_decoder: `"auto"` (a `CCMIMPretrainer` when the file has the
            decoder, else a `ViTEncoder`), `True` (require the decoder) or
            `False` (the encoder alone; the decoder's weights are left out).
        layer_norm_epsilon: LayerNorm epsilon (not stored in the file; MAE
            and ccMIM use 1e-6).
        pretrainer_kwargs: `CCMIMPretrainer` arguments that win over the
            defaults chosen here: for an MAE file (no projector) MAE's
            training, `masking="random", contrastive="none"`; for a file with
            ccMIM's projector the project's ccMIM defaults with the file's
            projection width; `mask_ratio` / `norm_pix_loss` from `args`.
            The decoder's size always comes from the file.
        prefix: the key prefix to use, when it cannot be inferred (several
            `cls_token`s in one file).
        position_embedding_atol: how far the file's sin-cos tables may be
            from the project's (float tolerance).

    Returns:
        A built `ViTEncoder` (name `"encoder"`) or `CCMIMPretrainer` holding
        the checkpoint's weights.

    Raises:
        ValueError: names or shapes that do not match (all listed), heads
            that cannot be inferred, position tables that differ.

    Warns:
        UnconvertedWeightsWarning: for checkpoint weights with no place in
            the converted model (a projector whose layout does not line up
            with the project's, or one the chosen configuration lacks).
    """
    if with_decoder not in ("auto", True, False):
        raise ValueError(
            f"with_decoder must be 'auto', True or False, got {with_decoder!r}."
        )
    if isinstance(args, argparse.Namespace):
        args = dict(vars(args))
    if args is not None and not isinstance(args, dict):
        raise TypeError(f"args must be a dict or argparse.Namespace, got {type(args).__name__}.")
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError("state_dict must be a non-empty dict of {name: array}.")

    state, found_prefix, outside = strip_prefix(state_dict, prefix)
    if found_prefix:
        logger.info("Removed the key prefix %r.", found_prefix)
    families = {}
    for key in state:
        families.setdefault(key_family(key), []).append(key)
    extra = sorted(outside) + sorted(found_prefix + k for k in families.get("other", []))
    if "norm.weight" not in state and "fc_norm.weight" in state:
        raise ValueError(
            "This is a fine-tuned checkpoint with global pooling (fc_norm, no final norm): its "
            "fc_norm normalises the pooled patch features, while the project's encoder ends "
            "with a norm over every token. Convert the MAE pretraining checkpoint "
            "(mae_pretrain_vit_*.pth or mae_visualize_vit_*.pth) instead."
        )
    finetune = families.get("finetune", [])
    if extra or finetune:
        lines = ["The checkpoint has keys this converter does not know:"]
        if finetune:
            lines.append(
                f"  a fine-tuning head ({listing(sorted(finetune))}): convert the "
                "pretraining checkpoint instead"
            )
        if extra:
            lines.append(f"  unexpected keys ({len(extra)}): {listing(extra)}")
        lines.append(
            "Fix: convert an MAE / ccMIM pretraining checkpoint (timm names: patch_embed, "
            "cls_token, pos_embed, blocks, norm, decoder_*, mask_token, projector)."
        )
        raise ValueError("\n".join(lines))

    # -- encoder architecture --------------------------------------------------
    require_keys(state, ["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"],
             "encoder's architecture")
    conv = array_shape(state["patch_embed.proj.weight"])
    if len(conv) != 4 or conv[2] != conv[3]:
        raise ValueError(
            f"patch_embed.proj.weight has shape {list(conv)}; expected a square conv kernel "
            "[D, C, p, p]."
        )
    width, channels, patch_size = conv[0], conv[1], conv[2]
    pos_shape = array_shape(state["pos_embed"])
    if len(pos_shape) != 3 or pos_shape[0] != 1 or pos_shape[1] < 2:
        raise ValueError(
            f"pos_embed has shape {list(pos_shape)}; expected [1, 1 + num_patches, D] (MAE's "
            "table with the [CLS] row)."
        )
    num_patches = pos_shape[1] - 1
    grid = patch_grid(num_patches, patch_size, image_size)
    depth = max(block_indices(state, "blocks"), default=-1) + 1
    mlp_hidden = array_shape(state["blocks.0.mlp.fc1.weight"])[0]
    mlp_ratio = mlp_hidden / width
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    heads = resolve_heads(width, num_heads, args, "encoder")
    if image_size is None:
        image_size = (grid[0] * patch_size, grid[1] * patch_size)

    expected = {
        "patch_embed.proj.weight": (width, channels, patch_size, patch_size),
        "patch_embed.proj.bias": (width,),
        "cls_token": (1, 1, width),
        "pos_embed": (1, num_patches + 1, width),
        "norm.weight": (width,),
        "norm.bias": (width,),
    }
    for i in range(depth):
        expected.update(block_shapes("blocks", i, width, mlp_hidden, qkv_bias))
    architecture = (
        f"ViT {depth} blocks, width {width}, {heads} heads, patch {patch_size}, "
        f"{grid[0]}x{grid[1]} patches, MLP {mlp_hidden}, qkv bias {qkv_bias}"
    )
    check_shapes(state, expected, families.get("encoder", []), architecture)

    # -- decoder architecture --------------------------------------------------
    decoder_keys = families.get("decoder", [])
    build_decoder = bool(decoder_keys) if with_decoder == "auto" else with_decoder
    if with_decoder is True and not decoder_keys:
        raise ValueError(
            "with_decoder=True but the checkpoint has no decoder (MAE's mae_pretrain_vit_* "
            "files hold the encoder only; mae_visualize_vit_* hold both). Convert with "
            "with_decoder='auto' or False for an encoder."
        )
    projector_keys = sorted(families.get("projector", []))
    if not build_decoder:
        if decoder_keys:
            logger.info("Leaving out the decoder's %d weights (with_decoder=False).",
                        len(decoder_keys))
        warn_unconverted(
            [found_prefix + k for k in projector_keys],
            "the projector belongs to a pretrainer; converted with the encoder only",
        )
        encoder = _build_encoder(image_size, patch_size, width, depth, heads, mlp_ratio,
                                 channels, qkv_bias, layer_norm_epsilon)
        load_encoder_weights(encoder, state, grid, position_embedding_atol)
        return encoder

    require_keys(state, ["decoder_embed.weight", "decoder_pred.weight"], "decoder's architecture")
    dec_width = array_shape(state["decoder_embed.weight"])[0]
    dec_depth = max(block_indices(state, "decoder_blocks"), default=-1) + 1
    dec_heads = resolve_heads(dec_width, decoder_num_heads, args, "decoder")
    patch_dim = patch_size * patch_size * channels
    dec_hidden = int(dec_width * mlp_ratio)
    dec_expected = {
        "decoder_embed.weight": (dec_width, width),
        "decoder_embed.bias": (dec_width,),
        "mask_token": (1, 1, dec_width),
        "decoder_pos_embed": (1, num_patches + 1, dec_width),
        "decoder_norm.weight": (dec_width,),
        "decoder_norm.bias": (dec_width,),
        "decoder_pred.weight": (patch_dim, dec_width),
        "decoder_pred.bias": (patch_dim,),
    }
    for i in range(dec_depth):
        dec_expected.update(block_shapes("decoder_blocks", i, dec_width, dec_hidden, True))
    check_shapes(
        state,
        dec_expected,
        decoder_keys,
        f"decoder {dec_depth} blocks, width {dec_width}, {dec_heads} heads, MLP {dec_hidden} "
        f"(the encoder's MLP ratio {mlp_ratio:g}), qkv bias, {patch_dim} outputs per patch",
    )

    projection_dim, projector_reason = (None, "the checkpoint has no projector")
    if projector_keys:
        projection_dim, projector_reason = projector_layout(state, width)

    config = {}
    if not projector_keys:
        config.update(masking="random", contrastive="none")
    elif projection_dim is not None:
        config["projection_dim"] = projection_dim
    if args:
        if args.get("mask_ratio") is not None:
            config["mask_ratio"] = float(args["mask_ratio"])
        if args.get("norm_pix_loss") is not None:
            config["norm_pix_loss"] = bool(args["norm_pix_loss"])
    user = dict(pretrainer_kwargs or {})
    fixed = {"encoder", "decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads"}
    if fixed & set(user):
        raise ValueError(
            f"pretrainer_kwargs may not set {', '.join(sorted(fixed & set(user)))}: the "
            "encoder and the decoder's size come from the checkpoint (use decoder_num_heads= "
            "for the heads)."
        )
    config.update(user)
    encoder = _build_encoder(image_size, patch_size, width, depth, heads, mlp_ratio,
                             channels, qkv_bias, layer_norm_epsilon)
    model = CCMIMPretrainer(
        encoder,
        decoder_hidden_dim=dec_width,
        decoder_num_layers=dec_depth,
        decoder_num_heads=dec_heads,
        **config,
    )
    model.build()
    load_encoder_weights(encoder, state, grid, position_embedding_atol)
    load_decoder_weights(model.decoder, state, grid, position_embedding_atol)

    if projector_keys:
        unconverted = [found_prefix + k for k in projector_keys]
        if projection_dim is None:
            warn_unconverted(unconverted, f"its layout is not the project's projector: "
                                           f"{projector_reason}")
        elif model.projector is None:
            warn_unconverted(unconverted, f"the pretrainer is built with "
                                           f"contrastive={model.contrastive!r}, without projector")
        elif model.projection_dim != projection_dim:
            warn_unconverted(unconverted, f"the file's projector is {projection_dim} wide, "
                                           f"projection_dim={model.projection_dim} was asked")
        else:
            assign_weights(projector_assignments(model.projector, state))
            logger.info("Converted the projector (%d -> %d -> %d).", width, width, projection_dim)
    logger.info("Converted %s and %s.", architecture, f"a {dec_depth}-block decoder")
    return model


def _build_encoder(image_size, patch_size, width, depth, heads, mlp_ratio, channels,
                   qkv_bias, layer_norm_epsilon):
    encoder = ViTEncoder(
        image_size=image_size,
        patch_size=patch_size,
        hidden_dim=width,
        num_layers=depth,
        num_heads=heads,
        mlp_ratio=mlp_ratio,
        num_channels=channels,
        qkv_bias=qkv_bias,
        layer_norm_epsilon=layer_norm_epsilon,
        name="encoder",
    )
    encoder.build()
    encoder.built = True
    return encoder


def convert_mae_checkpoint(path: PathLike, **kwargs: Any) -> ViTEncoder | CCMIMPretrainer:
    """`load_mae_state_dict(path)` then `convert_mae_state_dict` with the
    file's `args` (keyword arguments as for `convert_mae_state_dict`)."""
    checkpoint = load_mae_state_dict(path)
    kwargs.setdefault("args", checkpoint.args)
    return convert_mae_state_dict(checkpoint.state_dict, **kwargs)


def save_converted(
    model: ViTEncoder | CCMIMPretrainer, folder: PathLike, overwrite: bool = False
) -> dict[str, str]:
    """Writes `model` to `folder` as a preset (`config.json`,
    `model.weights.h5`, `metadata.json`; see `keras_ccmim.models.preset_files`).

    Args:
        model: a converted `ViTEncoder` or `CCMIMPretrainer`.
        folder: the output folder (created when missing).
        overwrite: replace those two files when they exist.

    Returns:
        `{"weights": path, "config": path}`.
    """
    folder = os.fspath(folder)
    weights = os.path.join(folder, WEIGHTS_FILE)
    config = os.path.join(folder, CONFIG_FILE)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ValueError(f"--output {folder!r} is a file; pass a folder for the converted model.")
    existing = [p for p in (weights, config) if os.path.exists(p)]
    if existing and not overwrite:
        raise ValueError(
            f"{listing(existing)} already exist; choose another output folder or pass "
            "overwrite=True (the binary's --overwrite)."
        )
    save_to_preset(model, folder)  # keras-hub's layout, with metadata.json
    return {"weights": weights, "config": config}


def load_converted(folder: PathLike) -> ViTEncoder | CCMIMPretrainer:
    """The model `save_converted` wrote to `folder` (a preset), built, with
    its weights."""
    return load_from_preset(folder, (ViTEncoder, CCMIMPretrainer))
