"""Where each weight of an MAE / ccMIM state dict goes in this project's
`ViTEncoder`, `MAEDecoder` and `ProjectionHead`, in both directions
(torch layout <-> Keras layout).

* `patch_embed.proj.weight` `[D, C, p, p]` (a strided conv) <-> the Dense
  kernel of `PatchEmbedding` `[p*p*C, D]`, rows in `patchify`'s `(row,
  column, channel)` order: `W.transpose(2, 3, 1, 0).reshape(p*p*C, D)`;
* every `nn.Linear` weight `[out, in]` <-> a Dense kernel `[in, out]` (`W.T`);
  the fused `qkv` keeps its `[q | k | v]` column blocks, each split into
  heads the same way as in timm;
* LayerNorm `weight`/`bias` <-> `gamma`/`beta`; the epsilon is not in the
  file (MAE uses 1e-6, the project's default; `layer_norm_epsilon=` changes
  it);
* `cls_token` <-> `cls_token`. Converting, row 0 of `pos_embed` (zero in MAE)
  is added to it: the project adds no position to [CLS], so a non-zero row
  is folded in exactly. Exporting, that row is zero, as MAE writes it;
* `pos_embed`'s patch rows and `decoder_pos_embed` are fixed sin-cos tables
  in MAE. The project computes its own (the same function,
  `sincos_2d_position_embedding`), so converting compares them with the
  file's instead of copying them: a difference beyond
  `position_embedding_atol` is an error (the checkpoint would compute
  another function). Exporting writes the encoder's table, `[1, 1+N, D]`;
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
"""

import logging
import math
from typing import Callable, NamedTuple

import keras
import numpy as np

from keras_ccmim.conversion.mae_architecture import array_shape, check_position_table

logger = logging.getLogger(__name__)


def linear_kernel(weight):
    """torch `nn.Linear` weight `[out, in]` -> Keras Dense kernel `[in, out]`."""
    return np.ascontiguousarray(np.asarray(weight).T)


def patch_kernel(weight):
    """torch conv weight `[D, C, p, p]` -> the Dense kernel on `patchify`'s
    `[p*p*C]` rows (row, column, channel order) `[p*p*C, D]`."""
    weight = np.asarray(weight)
    d, c, p, _ = weight.shape
    return np.ascontiguousarray(weight.transpose(2, 3, 1, 0).reshape(p * p * c, d))


def torch_patch_weight(kernel, channels):
    """`patch_kernel`'s inverse: the Dense kernel `[p*p*C, D]` -> the conv
    weight `[D, C, p, p]`."""
    kernel = np.asarray(kernel)
    rows, d = kernel.shape
    p = math.isqrt(rows // channels)
    return np.ascontiguousarray(kernel.reshape(p, p, channels, d).transpose(3, 2, 0, 1))


class Layout(NamedTuple):
    """How one weight is laid out in torch and in Keras: the two maps."""

    to_keras: Callable
    to_torch: Callable


SAME = Layout(np.asarray, np.asarray)
LINEAR = Layout(linear_kernel, linear_kernel)  # a transpose is its own inverse


def conv_layout(channels):
    return Layout(patch_kernel, lambda kernel: torch_patch_weight(kernel, channels))


def block_variables(prefix, index, block):
    """`[(torch name, Keras variable, Layout)]` of a `TransformerBlock` in
    timm's block names (`{prefix}.{index}.norm1.weight`, ...)."""
    p = f"{prefix}.{index}."
    out = [
        (p + "norm1.weight", block.norm1.gamma, SAME),
        (p + "norm1.bias", block.norm1.beta, SAME),
        (p + "attn.qkv.weight", block.qkv.kernel, LINEAR),
        (p + "attn.proj.weight", block.proj.kernel, LINEAR),
        (p + "attn.proj.bias", block.proj.bias, SAME),
        (p + "norm2.weight", block.norm2.gamma, SAME),
        (p + "norm2.bias", block.norm2.beta, SAME),
        (p + "mlp.fc1.weight", block.fc1.kernel, LINEAR),
        (p + "mlp.fc1.bias", block.fc1.bias, SAME),
        (p + "mlp.fc2.weight", block.fc2.kernel, LINEAR),
        (p + "mlp.fc2.bias", block.fc2.bias, SAME),
    ]
    if block.qkv_bias:
        out.append((p + "attn.qkv.bias", block.qkv.bias, SAME))
    return out


def encoder_variables(encoder):
    """`[(torch name, Keras variable, Layout)]` of a `ViTEncoder` in timm's
    names, but for `cls_token` and `pos_embed` (see the module docstring)."""
    projection = encoder.patch_embedding.projection
    out = [
        ("patch_embed.proj.weight", projection.kernel, conv_layout(encoder.num_channels)),
        ("patch_embed.proj.bias", projection.bias, SAME),
        ("norm.weight", encoder.norm.gamma, SAME),
        ("norm.bias", encoder.norm.beta, SAME),
    ]
    for i, block in enumerate(encoder.blocks):
        out += block_variables("blocks", i, block)
    return out


def assign_weights(assignments):
    for key, variable, value in assignments:
        value = np.asarray(value)
        if array_shape(value) != tuple(int(s) for s in variable.shape):
            raise ValueError(
                f"{key}: converted shape {list(value.shape)} does not fit the model's variable "
                f"{variable.path} {list(variable.shape)}."
            )
        variable.assign(value.astype(variable.dtype))


def _from_state(variables, state):
    return [(key, variable, layout.to_keras(state[key])) for key, variable, layout in variables]


def projector_assignments(projector, state):
    fc1, bn1, _, fc2, bn2 = projector.mlp
    variables = [
        ("projector.0.weight", fc1.kernel, LINEAR),
        ("projector.1.weight", bn1.gamma, SAME),
        ("projector.1.bias", bn1.beta, SAME),
        ("projector.1.running_mean", bn1.moving_mean, SAME),
        ("projector.1.running_var", bn1.moving_variance, SAME),
        ("projector.3.weight", fc2.kernel, LINEAR),
        ("projector.4.running_mean", bn2.moving_mean, SAME),
        ("projector.4.running_var", bn2.moving_variance, SAME),
    ]
    return _from_state(variables, state)


def load_encoder_weights(encoder, state, grid, atol):
    pos = np.asarray(state["pos_embed"])[0]
    check_position_table("pos_embed (patch rows)", pos[1:], grid, encoder.hidden_dim, False, atol)
    if np.any(pos[0] != 0):
        logger.info("pos_embed's [CLS] row is not zero: folded into cls_token.")
    # The project adds no position to [CLS]: MAE's row 0 goes into the token.
    cls_token = ("cls_token", encoder.cls_token, np.asarray(state["cls_token"]) + pos[None, :1])
    assign_weights([cls_token] + _from_state(encoder_variables(encoder), state))


def encoder_state_dict(encoder):
    """The `ViTEncoder`'s weights as `{timm name: float32 array}` in torch's
    layouts, with `pos_embed` `[1, 1+N, D]` (its sin-cos table under a zero
    [CLS] row) and `cls_token` `[1, 1, D]`; `load_encoder_weights`' inverse."""

    def value(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), dtype=np.float32)

    table = value(encoder.position_embedding.embedding)
    state = {
        "cls_token": value(encoder.cls_token),
        "pos_embed": np.concatenate([np.zeros_like(table[:1]), table])[None],
    }
    for key, variable, layout in encoder_variables(encoder):
        state[key] = np.ascontiguousarray(layout.to_torch(value(variable)), dtype=np.float32)
    return state


def load_decoder_weights(decoder, state, grid, atol):
    check_position_table("decoder_pos_embed", np.asarray(state["decoder_pos_embed"])[0], grid,
                         decoder.hidden_dim, True, atol)
    variables = [
        ("decoder_embed.weight", decoder.embed.kernel, LINEAR),
        ("decoder_embed.bias", decoder.embed.bias, SAME),
        ("mask_token", decoder.mask_token, SAME),
        ("decoder_norm.weight", decoder.norm.gamma, SAME),
        ("decoder_norm.bias", decoder.norm.beta, SAME),
        ("decoder_pred.weight", decoder.head.kernel, LINEAR),
        ("decoder_pred.bias", decoder.head.bias, SAME),
    ]
    for i, block in enumerate(decoder.blocks):
        variables += block_variables("decoder_blocks", i, block)
    assign_weights(_from_state(variables, state))
