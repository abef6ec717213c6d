"""What an MAE / ccMIM state dict must hold: its architecture read from the
weights (width, depth, patch grid, attention heads), the names and shapes
that architecture implies, and the errors and warnings that list every
mismatch at once (`keras_ccmim.conversion.convert_mae` uses them).

The heads are not in the weights: an explicit argument, else the file's
`args` (`args.num_heads`, or the size in `args.model`), else the project's
preset for that width. The position tables are fixed sin-cos functions in
MAE; the file's are compared with the project's, never loaded.
"""

import logging
import math
import re
import warnings

import numpy as np

from keras_ccmim.layers.position_embedding import sincos_2d_position_embedding
from keras_ccmim.models.presets import PRESETS

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

_DECODER_TOP = ("mask_token", "decoder_pos_embed")
_LIST_LIMIT = 20


class UnconvertedWeightsWarning(UserWarning):
    """Weights of the checkpoint that the converted model does not hold
    (a projector whose layout does not line up, heads of a model left out)."""


def listing(items, limit=_LIST_LIMIT):
    items = list(items)
    text = ", ".join(items[:limit])
    if len(items) > limit:
        text += f", ... and {len(items) - limit} more"
    return text


def array_shape(array):
    return tuple(int(s) for s in np.shape(array))

def block_indices(keys, prefix):
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for m in map(pattern.match, keys) if m})


def block_shapes(prefix, index, width, mlp_hidden, qkv_bias):
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


def key_family(key):
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


def strip_prefix(state_dict, prefix):
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
                f"such as 'module.'). Its keys: {listing(sorted(keys))}."
            )
        if len(candidates) > 1:
            raise ValueError(
                "The state dict holds several ViTs (cls_token under the prefixes "
                f"{listing(repr(c) for c in candidates)}). Pass prefix= to choose one."
            )
        prefix = candidates[0]
    inside = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    outside = sorted(k for k in keys if not k.startswith(prefix))
    return inside, prefix, outside


def check_shapes(state, expected, family_keys, architecture):
    """Raises one error listing missing, unexpected and mis-shaped keys."""
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in family_keys if k not in expected)
    mismatched = sorted(
        f"{k}: file {list(array_shape(state[k]))}, expected {list(expected[k])}"
        for k in expected
        if k in state and array_shape(state[k]) != tuple(expected[k])
    )
    if missing or unexpected or mismatched:
        lines = [
            f"The checkpoint does not match an MAE model of the inferred architecture "
            f"({architecture}):"
        ]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {listing(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {listing(mismatched)}")
        lines.append(
            "Fix: convert an MAE / ccMIM pretraining checkpoint in timm naming (see "
            "keras_ccmim.conversion.convert_mae), or fix the keys above."
        )
        raise ValueError("\n".join(lines))


def require_keys(state, keys, what):
    missing = [k for k in keys if k not in state]
    if missing:
        raise ValueError(
            f"Cannot infer the {what}: missing keys {listing(missing)}. Expected MAE's "
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


def resolve_heads(width, explicit, args, kind):
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


def patch_grid(num_patches, patch_size, image_size):
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


def check_position_table(name, file_table, grid, width, cls_row, atol):
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

def projector_layout(state, width):
    """`(output_dim, None)` when `projector.*` is ccMIM's projector with hidden
    width `width`, else `(None, reason)`."""
    keys = {
        k[len("projector."):]: array_shape(v) for k, v in state.items() if k.startswith("projector.")
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

def warn_unconverted(keys, reason):
    if keys:
        warnings.warn(
            f"Not converted ({reason}): {len(keys)} checkpoint weights are left out of the "
            f"converted model: {listing(sorted(keys))}.",
            UnconvertedWeightsWarning,
            stacklevel=3,
        )
