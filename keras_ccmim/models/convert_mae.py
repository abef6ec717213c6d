"""Converts the official MAE PyTorch checkpoints (and the public ccMIM code's)
into this project's `ViTEncoder` or `CCMIMPretrainer`.

The inputs are MAE's `mae_pretrain_vit_{base,large,huge}.pth` (encoder only)
and `mae_visualize_vit_*.pth` (encoder and decoder), state dicts in timm's
naming under the key `"model"`, often beside the training `argparse.Namespace`
under `"args"`. The public ccMIM code saves the same names plus its projector
(`projector.{0,1,3,4}.*`, a torch `nn.Sequential`), possibly behind a
`module.` prefix.

    checkpoint = load_mae_state_dict("mae_visualize_vit_large.pth")
    model = convert_mae_state_dict(checkpoint.state_dict, args=checkpoint.args)
    save_converted(model, "converted/mae_vit_large")

or `convert_mae_checkpoint(path)` for both steps, or the binary
`tools/convert_mae.py`.

How the weights map (torch layout -> Keras layout):

* `patch_embed.proj.weight` `[D, C, p, p]` (a strided conv) -> the Dense
  kernel of `PatchEmbedding` `[p*p*C, D]`, rows in `patchify`'s `(row,
  column, channel)` order: `W.transpose(2, 3, 1, 0).reshape(p*p*C, D)`;
* every `nn.Linear` weight `[out, in]` -> a Dense kernel `[in, out]` (`W.T`);
  the fused `qkv` keeps its `[q | k | v]` column blocks, each split into
  heads the same way as in timm;
* LayerNorm `weight`/`bias` -> `gamma`/`beta`; the epsilon is not in the file
  (MAE uses 1e-6, the project's default; `layer_norm_epsilon=` changes it);
* `cls_token` -> `cls_token` plus row 0 of `pos_embed` (zero in MAE; the
  project adds no position to [CLS], so a non-zero row is folded in exactly);
* `pos_embed`'s patch rows and `decoder_pos_embed` are fixed sin-cos tables
  in MAE. The project computes its own (the same function,
  `sincos_2d_position_embedding`), so they are compared with the file's,
  not copied: a difference beyond `position_embedding_atol` is an error
  (the checkpoint would compute another function);
* the decoder: `decoder_embed` -> `decoder.embed`, `mask_token`,
  `decoder_blocks.{i}` -> `decoder.block_{i}`, `decoder_norm` ->
  `decoder.norm`, `decoder_pred` -> `decoder.head` (MAE's pixel order is
  `patchify`'s);
* ccMIM's projector `Linear(D, D, no bias) - BN - ReLU - Linear(D, E, no
  bias) - BN(affine=False)` -> the project's `ProjectionHead` (same layers;
  BN `running_mean`/`running_var` -> `moving_mean`/`moving_variance`;
  `num_batches_tracked` has no counterpart). Mapped only when its keys and
  shapes are exactly that; otherwise its keys are reported as not converted
  (an `UnconvertedWeightsWarning`) and the projector keeps its random init.

Both MAE and the project use the exact (erf) GELU in the MLP and pre-norm
blocks with a biased qkv projection, so a converted encoder computes MAE's
function (tests/models/test_convert_mae.py checks it against an
independent torch forward on every backend).

Reading `.pth` files needs PyTorch (the `torch` extra); it is imported only
inside `load_mae_state_dict`, so the rest works without it. The file is read
with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only; `argparse.Namespace` (MAE's `args`) is the one class
allowed besides. Anything else in the file is refused.
"""

import argparse
import logging
import math
import os
import pickle
import re
import warnings
from typing import NamedTuple, Optional

import keras
import numpy as np

from keras_ccmim.layers.position_embedding import sincos_2d_position_embedding
from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer
from keras_ccmim.models.preset_files import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_from_preset,
    save_to_preset,
)
from keras_ccmim.models.presets import PRESETS
from keras_ccmim.models.vit_encoder import ViTEncoder

logger = logging.getLogger(__name__)


# Model sizes named in MAE's / ccMIM's `args.model` ("mae_vit_large_patch16").
_NAMED_SIZES = {
    "tiny": (192, 3),
    "small": (384, 6),
    "base": (768, 12),
    "large": (1024, 16),
    "huge": (1280, 16),
}
# MAE and the public ccMIM code define every model with a 512-wide decoder
# of 16 heads ("dec512d8b").
_MAE_DECODER_HEADS = {512: 16}

_BLOCK_PARAMS = (
    "norm1.weight",
    "norm1.bias",
    "attn.qkv.weight",
    "attn.qkv.bias",
    "attn.proj.weight",
    "attn.proj.bias",
    "norm2.weight",
    "norm2.bias",
    "mlp.fc1.weight",
    "mlp.fc1.bias",
    "mlp.fc2.weight",
    "mlp.fc2.bias",
)
_DECODER_TOP = ("mask_token", "decoder_pos_embed")
_LIST_LIMIT = 20


class UnconvertedWeightsWarning(UserWarning):
    """Weights of the checkpoint that the converted model does not hold
    (a projector whose layout does not line up, heads of a model left out)."""


class MAECheckpoint(NamedTuple):
    """What `load_mae_state_dict` read: `state_dict` (`{name: np.ndarray}`)
    and `args` (the training arguments as a dict, or None)."""

    state_dict: dict
    args: Optional[dict]


# -- reading the .pth file ---------------------------------------------------


def load_mae_state_dict(path):
    """Reads an MAE / ccMIM `.pth` checkpoint into numpy arrays.

    The file is unpickled with `torch.load(..., weights_only=True)`: tensors,
    plain containers and numbers only, plus `argparse.Namespace` (MAE saves
    its arguments as one). A file holding any other class is refused.

    Args:
        path: the `.pth` file.

    Returns:
        `MAECheckpoint(state_dict, args)`: the state dict under `"model"`
        (or `"state_dict"`, or the file itself when it is a state dict) with
        floating tensors as float32 numpy arrays, and `vars(args)` (None when
        the file has no `"args"`).

    Raises:
        ImportError: PyTorch is not installed.
        ValueError: the file holds other pickled classes, or no state dict.
        OSError: the file cannot be read.
    """
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "Reading a PyTorch .pth checkpoint needs PyTorch, which is not installed. "
            "Install the optional extra (pip install 'keras-ccmim[torch]', or pip install "
            "torch), or pass a dict of numpy arrays to convert_mae_state_dict."
        ) from error

    path = os.fspath(path)
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    try:
        if safe_globals is not None:
            with safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:  # torch < 2.5: the allow-list is process-wide.
            torch.serialization.add_safe_globals([argparse.Namespace])
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()
        unsupported = [line for line in reason if "GLOBAL" in line or "global" in line]
        detail = (unsupported or reason or ["(no detail)"])[0].strip()
        raise ValueError(
            f"Refused to read {path!r}: it holds pickled objects other than tensors, plain "
            f"containers and argparse.Namespace, and unpickling those could run arbitrary code "
            f"(torch: {detail}). Only MAE-style checkpoints are read. If you trust the file, "
            "re-save just its weights with torch.save({'model': state_dict}, new_path) and "
            "convert that."
        ) from error

    if not isinstance(obj, dict):
        raise ValueError(
            f"{path!r} holds a {type(obj).__name__}, not a checkpoint dict. Expected MAE's "
            "layout: {'model': state_dict, 'args': Namespace, ...}, or a state dict."
        )
    raw_args = obj.get("args")
    if "model" in obj and isinstance(obj["model"], dict):
        state = obj["model"]
    elif "state_dict" in obj and isinstance(obj["state_dict"], dict):
        state = obj["state_dict"]
    elif obj and all(torch.is_tensor(v) for v in obj.values()):
        state = obj
    else:
        raise ValueError(
            f"{path!r} has no state dict: expected the weights under 'model' (MAE) or "
            f"'state_dict', or a dict of tensors; its top-level keys are "
            f"{_listing(sorted(map(str, obj)))}."
        )

    arrays = {}
    not_tensors = []
    for key, value in state.items():
        if not torch.is_tensor(value):
            not_tensors.append(str(key))
            continue
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(torch.float32)
        arrays[str(key)] = value.numpy()
    if not_tensors:
        raise ValueError(
            f"{path!r}: the state dict holds values that are not tensors: "
            f"{_listing(not_tensors)}. Expected a torch state dict of tensors."
        )

    if isinstance(raw_args, argparse.Namespace):
        args = dict(vars(raw_args))
    elif isinstance(raw_args, dict):
        args = dict(raw_args)
    else:
        args = None
    return MAECheckpoint(arrays, args)


# -- small helpers -------------------------------------------------------------


def _listing(items, limit=_LIST_LIMIT):
    items = list(items)
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", ... and {len(items) - limit} more"
    return text


def _shape(array):
    return tuple(int(s) for s in np.shape(array))


def _linear(weight):
    """torch `nn.Linear` weight `[out, in]` -> Keras Dense kernel `[in, out]`."""
    return np.ascontiguousarray(np.asarray(weight).T)


def _patch_kernel(weight):
    """torch conv weight `[D, C, p, p]` -> the Dense kernel on `patchify`'s
    `[p*p*C]` rows (row, column, channel order) `[p*p*C, D]`."""
    weight = np.asarray(weight)
    d, c, p, _ = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(p * p * c, d))


def _identity(value):
    return np.asarray(value)


def _block_indices(keys, prefix):
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for m in map(pattern.match, keys) if m})


def _block_shapes(prefix, index, width, mlp_hidden, qkv_bias):
    shapes = {
        "norm1.weight": (width,),
        "norm1.bias": (width,),
        "attn.qkv.weight": (3 * width, width),
        "attn.qkv.bias": (3 * width,),
        "attn.proj.weight": (width, width),
        "attn.proj.bias": (width,),
        "norm2.weight": (width,),
        "norm2.bias": (width,),
        "mlp.fc1.weight": (mlp_hidden, width),
        "mlp.fc1.bias": (mlp_hidden,),
        "mlp.fc2.weight": (width, mlp_hidden),
        "mlp.fc2.bias": (width,),
    }
    if not qkv_bias:
        del shapes["attn.qkv.bias"]
    return {f"{prefix}.{index}.{name}": shape for name, shape in shapes.items()}


def _family(key):
    """Which part of an MAE / ccMIM model a (prefix-free) key belongs to."""
    top = key.split(".", 1)[0]
    if top in ("patch_embed", "cls_token", "pos_embed", "blocks", "norm"):
        return "encoder"
    if top.startswith("decoder_") or top in _DECODER_TOP:
        return "decoder"
    if top == "projector":
        return "projector"
    if top in ("head", "fc_norm"):
        return "finetune"
    return "other"


def _strip_prefix(state_dict, prefix):
    """Finds the prefix (`""`, `"module."`, ...) in front of the ViT's names.

    Returns `(stripped state dict, prefix, keys outside the prefix)`.
    """
    keys = list(state_dict)
    if prefix is None:
        candidates = sorted(
            {k[: -len("cls_token")] for k in keys if k == "cls_token" or k.endswith(".cls_token")}
        )
        if not candidates:
            raise ValueError(
                "This is not an MAE / ViT state dict: no 'cls_token' (with or without a prefix "
                f"such as 'module.'). Its keys: {_listing(sorted(keys))}."
            )
        if len(candidates) > 1:
            raise ValueError(
                "The state dict holds several ViTs (cls_token under the prefixes "
                f"{_listing(repr(c) for c in candidates)}). Pass prefix= to choose one."
            )
        prefix = candidates[0]
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    outside = sorted(k for k in keys if not k.startswith(prefix))
    return inside, prefix, outside


def _check_shapes(state, expected, family_keys, architecture):
    """Raises one error listing missing, unexpected and mis-shaped keys."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in family_keys if k not in expected)
    mismatched = sorted(
        f"{k}: file {list(_shape(state[k]))}, expected {list(expected[k])}"
        for k in expected
        if k in state and _shape(state[k]) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        lines = [
            f"The checkpoint does not match an MAE model of the inferred architecture "
            f"({architecture}):"
        ]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        lines.append(
            "Fix: convert an MAE / ccMIM pretraining checkpoint in timm naming (see "
            "keras_ccmim.models.convert_mae), or fix the keys above."
        )
        raise ValueError("\n".join(lines))


def _require(state, keys, what):
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"Cannot infer the {what}: missing keys {_listing(missing)}. Expected MAE's "
            "names (patch_embed.proj.weight, pos_embed, blocks.{i}.*, ...)."
        )


def _preset_heads(kind):
    """`{width: heads}` of this project's presets (`kind`: encoder/decoder)."""
    table = {}
    for preset in PRESETS.values():
        config = preset[kind]
        table.setdefault(int(config["hidden_dim"]), int(config["num_heads"]))
    return table


def _heads_from_args(args, width):
    if not args:
        return None, None
    if args.get("num_heads") is not None:
        return int(args["num_heads"]), "the checkpoint's args.num_heads"
    model = args.get("model")
    if isinstance(model, str):
        match = re.search(r"vit_(tiny|small|base|large|huge)", model)
        if match:
            named_width, heads = _NAMED_SIZES[match.group(1)]
            if named_width == width:
                return heads, f"the checkpoint's args.model {model!r}"
            logger.warning(
                "args.model %r names a %d-wide ViT but the weights are %d wide; not using "
                "it for the number of heads.", model, named_width, width,
            )
    return None, None


def _resolve_heads(width, explicit, args, kind):
    """Encoder / decoder attention heads: explicit > args > known widths."""
    what = "num_heads" if kind == "encoder" else "decoder_num_heads"
    from_args, source = (None, None)
    if kind == "encoder":
        from_args, source = _heads_from_args(args, width)
    elif args:
        if args.get("decoder_num_heads") is not None:
            from_args, source = int(args["decoder_num_heads"]), "args.decoder_num_heads"
        elif re.match(r"(mae|ccmim)_vit_", str(args.get("model", ""))) and (
            width in _MAE_DECODER_HEADS
        ):
            from_args = _MAE_DECODER_HEADS[width]
            source = f"the checkpoint's args.model {args['model']!r} (MAE's decoder)"
    if explicit is not None:
        heads = int(explicit)
        if from_args is not None and from_args != heads:
            logger.warning(
                "%s=%d overrides %d heads given by %s.", what, heads, from_args, source
            )
        source = f"the {what} argument"
    elif from_args is not None:
        heads = from_args
    else:
        table = _preset_heads(kind)
        if width not in table:
            known = ", ".join(f"{w}->{h}" for w, h in sorted(table.items()))
            raise ValueError(
                f"Cannot infer the {kind}'s number of attention heads: the checkpoint has no "
                f"args naming the model, and width {width} is not a known preset width "
                f"({known}). Pass {what}= (the binary's --{what})."
            )
        heads, source = table[width], f"the preset table (width {width})"
    if heads <= 0 or width % heads:
        raise ValueError(
            f"{what}={heads} (from {source}) does not divide the {kind} width {width}. "
            f"Pass the {what} the checkpoint was trained with."
        )
    logger.info("%s: %d attention heads, from %s.", kind, heads, source)
    return heads


def _grid(num_patches, patch_size, image_size):
    side = math.isqrt(num_patches)
    if side * side == num_patches:
        return (side, side)
    if image_size is not None:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        grid = (int(h) // patch_size, int(w) // patch_size)
        if grid[0] * grid[1] == num_patches:
            return grid
    raise ValueError(
        f"pos_embed has {num_patches} patch rows, not a square grid, and no image_size "
        f"whose {patch_size}-pixel patch grid has that many patches was given. Pass "
        "image_size=(height, width) of the checkpoint's training images."
    )


def _check_table(name, file_table, grid, width, cls_row, atol):
    expected = sincos_2d_position_embedding(grid, width, cls_token=cls_row)
    diff = float(np.max(np.abs(np.asarray(file_table, np.float64) - expected)))
    if not diff <= atol:
        raise ValueError(
            f"The checkpoint's {name} differs from the fixed 2-D sin-cos table for its "
            f"{grid[0]}x{grid[1]} grid by up to {diff:.3g} (tolerance {atol:g}). The project "
            "recomputes that table instead of loading it, so this checkpoint (a learned or "
            "differently laid out position embedding) would compute another function. For "
            "a half-precision file pass a larger position_embedding_atol."
        )
    return diff


def _assign(assignments):
    for key, variable, value in assignments:
        value = np.asarray(value)
        if _shape(value) != tuple(int(s) for s in variable.shape):
            raise ValueError(
                f"{key}: converted shape {list(value.shape)} does not fit the model's variable "
                f"{variable.path} {list(variable.shape)}."
            )
        variable.assign(value.astype(variable.dtype))


def _block_assignments(prefix, index, block, state):
    p = f"{prefix}.{index}."
    out = [
        (p + "norm1.weight", block.norm1.gamma, _identity),
        (p + "norm1.bias", block.norm1.beta, _identity),
        (p + "attn.qkv.weight", block.qkv.kernel, _linear),
        (p + "attn.proj.weight", block.proj.kernel, _linear),
        (p + "attn.proj.bias", block.proj.bias, _identity),
        (p + "norm2.weight", block.norm2.gamma, _identity),
        (p + "norm2.bias", block.norm2.beta, _identity),
        (p + "mlp.fc1.weight", block.fc1.kernel, _linear),
        (p + "mlp.fc1.bias", block.fc1.bias, _identity),
        (p + "mlp.fc2.weight", block.fc2.kernel, _linear),
        (p + "mlp.fc2.bias", block.fc2.bias, _identity),
    ]
    if block.qkv_bias:
        out.append((p + "attn.qkv.bias", block.qkv.bias, _identity))
    return [(key, variable, fn(state[key])) for key, variable, fn in out]


def _projector_layout(state, width):
    """`(output_dim, None)` when `projector.*` is ccMIM's projector with hidden
    width `width`, else `(None, reason)`."""
    keys = {
        k[len("projector."):]: _shape(v) for k, v in state.items() if k.startswith("projector.")
    }
    first, second = keys.get("0.weight"), keys.get("3.weight")
    if first is None or second is None or len(first) != 2 or len(second) != 2:
        return None, "no Linear weights at projector.0 and projector.3"
    hidden, out = first[0], second[0]
    required = {
        "0.weight": (hidden, width),
        "1.weight": (hidden,),
        "1.bias": (hidden,),
        "1.running_mean": (hidden,),
        "1.running_var": (hidden,),
        "3.weight": (out, hidden),
        "4.running_mean": (out,),
        "4.running_var": (out,),
    }
    optional = {"1.num_batches_tracked": (), "4.num_batches_tracked": ()}
    extra = sorted(k for k in keys if k not in required and k not in optional)
    missing = sorted(k for k in required if k not in keys)
    wrong = sorted(k for k, s in required.items() if k in keys and keys[k] != s)
    if extra or missing or wrong:
        parts = []
        if extra:
            parts.append(f"keys the project's projector lacks: {', '.join(extra)}")
        if missing:
            parts.append(f"keys it needs: {', '.join(missing)}")
        if wrong:
            parts.append(f"unexpected shapes: {', '.join(wrong)}")
        return None, "; ".join(parts)
    if hidden != width:
        return None, (
            f"its hidden width {hidden} is not the encoder width {width} (the project's "
            "projector is D -> D -> E)"
        )
    return out, None


def _projector_assignments(projector, state):
    fc1, bn1, _, fc2, bn2 = projector.mlp
    pairs = [
        ("projector.0.weight", fc1.kernel, _linear),
        ("projector.1.weight", bn1.gamma, _identity),
        ("projector.1.bias", bn1.beta, _identity),
        ("projector.1.running_mean", bn1.moving_mean, _identity),
        ("projector.1.running_var", bn1.moving_variance, _identity),
        ("projector.3.weight", fc2.kernel, _linear),
        ("projector.4.running_mean", bn2.moving_mean, _identity),
        ("projector.4.running_var", bn2.moving_variance, _identity),
    ]
    return [(key, variable, fn(state[key])) for key, variable, fn in pairs]


def _warn_unconverted(keys, reason):
    if keys:
        warnings.warn(
            f"Not converted ({reason}): {len(keys)} checkpoint weights are left out of the "
            f"converted model: {_listing(sorted(keys))}.",
            UnconvertedWeightsWarning,
            stacklevel=3,
        )


# -- the conversion ------------------------------------------------------------


def convert_mae_state_dict(
    state_dict,
    *,
    args=None,
    num_heads=None,
    decoder_num_heads=None,
    image_size=None,
    with_decoder="auto",
    layer_norm_epsilon=1e-6,
    pretrainer_kwargs=None,
    prefix=None,
    position_embedding_atol=1e-4,
):
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

    state, found_prefix, outside = _strip_prefix(state_dict, prefix)
    if found_prefix:
        logger.info("Removed the key prefix %r.", found_prefix)
    families = {}
    for key in state:
        families.setdefault(_family(key), []).append(key)
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
                f"  a fine-tuning head ({_listing(sorted(finetune))}): convert the "
                "pretraining checkpoint instead"
            )
        if extra:
            lines.append(f"  unexpected keys ({len(extra)}): {_listing(extra)}")
        lines.append(
            "Fix: convert an MAE / ccMIM pretraining checkpoint (timm names: patch_embed, "
            "cls_token, pos_embed, blocks, norm, decoder_*, mask_token, projector)."
        )
        raise ValueError("\n".join(lines))

    # -- encoder architecture --------------------------------------------------
    _require(state, ["patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"],
             "encoder's architecture")
    conv = _shape(state["patch_embed.proj.weight"])
    if len(conv) != 4 or conv[2] != conv[3]:
        raise ValueError(
            f"patch_embed.proj.weight has shape {list(conv)}; expected a square conv kernel "
            "[D, C, p, p]."
        )
    width, channels, patch_size = conv[0], conv[1], conv[2]
    pos_shape = _shape(state["pos_embed"])
    if len(pos_shape) != 3 or pos_shape[0] != 1 or pos_shape[1] < 2:
        raise ValueError(
            f"pos_embed has shape {list(pos_shape)}; expected [1, 1 + num_patches, D] (MAE's "
            "table with the [CLS] row)."
        )
    num_patches = pos_shape[1] - 1
    grid = _grid(num_patches, patch_size, image_size)
    depth = max(_block_indices(state, "blocks"), default=-1) + 1
    mlp_hidden = _shape(state["blocks.0.mlp.fc1.weight"])[0]
    mlp_ratio = mlp_hidden / width
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    heads = _resolve_heads(width, num_heads, args, "encoder")
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
        expected.update(_block_shapes("blocks", i, width, mlp_hidden, qkv_bias))
    architecture = (
        f"ViT {depth} blocks, width {width}, {heads} heads, patch {patch_size}, "
        f"{grid[0]}x{grid[1]} patches, MLP {mlp_hidden}, qkv bias {qkv_bias}"
    )
    _check_shapes(state, expected, families.get("encoder", []), architecture)

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
        _warn_unconverted(
            [found_prefix + k for k in projector_keys],
            "the projector belongs to a pretrainer; converted with the encoder only",
        )
        encoder = _build_encoder(image_size, patch_size, width, depth, heads, mlp_ratio,
                                 channels, qkv_bias, layer_norm_epsilon)
        _load_encoder(encoder, state, grid, position_embedding_atol)
        return encoder

    _require(state, ["decoder_embed.weight", "decoder_pred.weight"], "decoder's architecture")
    dec_width = _shape(state["decoder_embed.weight"])[0]
    dec_depth = max(_block_indices(state, "decoder_blocks"), default=-1) + 1
    dec_heads = _resolve_heads(dec_width, decoder_num_heads, args, "decoder")
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
        dec_expected.update(_block_shapes("decoder_blocks", i, dec_width, dec_hidden, True))
    _check_shapes(
        state,
        dec_expected,
        decoder_keys,
        f"decoder {dec_depth} blocks, width {dec_width}, {dec_heads} heads, MLP {dec_hidden} "
        f"(the encoder's MLP ratio {mlp_ratio:g}), qkv bias, {patch_dim} outputs per patch",
    )

    projection_dim, projector_reason = (None, "the checkpoint has no projector")
    if projector_keys:
        projection_dim, projector_reason = _projector_layout(state, width)

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
    _load_encoder(encoder, state, grid, position_embedding_atol)
    _load_decoder(model.decoder, state, grid, position_embedding_atol)

    if projector_keys:
        unconverted = [found_prefix + k for k in projector_keys]
        if projection_dim is None:
            _warn_unconverted(unconverted, f"its layout is not the project's projector: "
                                           f"{projector_reason}")
        elif model.projector is None:
            _warn_unconverted(unconverted, f"the pretrainer is built with "
                                           f"contrastive={model.contrastive!r}, without projector")
        elif model.projection_dim != projection_dim:
            _warn_unconverted(unconverted, f"the file's projector is {projection_dim} wide, "
                                           f"projection_dim={model.projection_dim} was asked")
        else:
            _assign(_projector_assignments(model.projector, state))
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


def _load_encoder(encoder, state, grid, atol):
    pos = np.asarray(state["pos_embed"])[0]
    _check_table("pos_embed (patch rows)", pos[1:], grid, encoder.hidden_dim, False, atol)
    if np.any(pos[0] != 0):
        logger.info("pos_embed's [CLS] row is not zero: folded into cls_token.")
    assignments = [
        ("patch_embed.proj.weight", encoder.patch_embedding.projection.kernel,
         _patch_kernel(state["patch_embed.proj.weight"])),
        ("patch_embed.proj.bias", encoder.patch_embedding.projection.bias,
         np.asarray(state["patch_embed.proj.bias"])),
        # The project adds no position to [CLS]: MAE's row 0 goes into the token.
        ("cls_token", encoder.cls_token, np.asarray(state["cls_token"]) + pos[None, :1]),
        ("norm.weight", encoder.norm.gamma, np.asarray(state["norm.weight"])),
        ("norm.bias", encoder.norm.beta, np.asarray(state["norm.bias"])),
    ]
    for i, block in enumerate(encoder.blocks):
        assignments += _block_assignments("blocks", i, block, state)
    _assign(assignments)


def _load_decoder(decoder, state, grid, atol):
    _check_table("decoder_pos_embed", np.asarray(state["decoder_pos_embed"])[0], grid,
                 decoder.hidden_dim, True, atol)
    assignments = [
        ("decoder_embed.weight", decoder.embed.kernel, _linear(state["decoder_embed.weight"])),
        ("decoder_embed.bias", decoder.embed.bias, np.asarray(state["decoder_embed.bias"])),
        ("mask_token", decoder.mask_token, np.asarray(state["mask_token"])),
        ("decoder_norm.weight", decoder.norm.gamma, np.asarray(state["decoder_norm.weight"])),
        ("decoder_norm.bias", decoder.norm.beta, np.asarray(state["decoder_norm.bias"])),
        ("decoder_pred.weight", decoder.head.kernel, _linear(state["decoder_pred.weight"])),
        ("decoder_pred.bias", decoder.head.bias, np.asarray(state["decoder_pred.bias"])),
    ]
    for i, block in enumerate(decoder.blocks):
        assignments += _block_assignments("decoder_blocks", i, block, state)
    _assign(assignments)


def convert_mae_checkpoint(path, **kwargs):
    """`load_mae_state_dict(path)` then `convert_mae_state_dict` with the
    file's `args` (keyword arguments as for `convert_mae_state_dict`)."""
    checkpoint = load_mae_state_dict(path)
    kwargs.setdefault("args", checkpoint.args)
    return convert_mae_state_dict(checkpoint.state_dict, **kwargs)


# -- saving ----------------------------------------------------------------------


def save_converted(model, folder, overwrite=False):
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
            f"{_listing(existing)} already exist; choose another output folder or pass "
            "overwrite=True (the binary's --overwrite)."
        )
    save_to_preset(model, folder)  # keras-hub's layout, with metadata.json
    return {"weights": weights, "config": config}


def load_converted(folder):
    """The model `save_converted` wrote to `folder` (a preset), built, with
    its weights."""
    return load_from_preset(folder, (ViTEncoder, CCMIMPretrainer))
