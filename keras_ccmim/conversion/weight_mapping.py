"""Where each weight of an MAE / ccMIM state dict goes in this project's
`ViTEncoder`, `MAEDecoder` and `ProjectionHead` (torch layout -> Keras layout).

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
"""

import logging

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


def _identity(value):
    return np.asarray(value)

def assign_weights(assignments):
    for key, variable, value in assignments:
        value = np.asarray(value)
        if array_shape(value) != tuple(int(s) for s in variable.shape):
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
        (p + "attn.qkv.weight", block.qkv.kernel, linear_kernel),
        (p + "attn.proj.weight", block.proj.kernel, linear_kernel),
        (p + "attn.proj.bias", block.proj.bias, _identity),
        (p + "norm2.weight", block.norm2.gamma, _identity),
        (p + "norm2.bias", block.norm2.beta, _identity),
        (p + "mlp.fc1.weight", block.fc1.kernel, linear_kernel),
        (p + "mlp.fc1.bias", block.fc1.bias, _identity),
        (p + "mlp.fc2.weight", block.fc2.kernel, linear_kernel),
        (p + "mlp.fc2.bias", block.fc2.bias, _identity),
    ]
    if block.qkv_bias:
        out.append((p + "attn.qkv.bias", block.qkv.bias, _identity))
    return [(key, variable, fn(state[key])) for key, variable, fn in out]

def projector_assignments(projector, state):
    fc1, bn1, _, fc2, bn2 = projector.mlp
    pairs = [
        ("projector.0.weight", fc1.kernel, linear_kernel),
        ("projector.1.weight", bn1.gamma, _identity),
        ("projector.1.bias", bn1.beta, _identity),
        ("projector.1.running_mean", bn1.moving_mean, _identity),
        ("projector.1.running_var", bn1.moving_variance, _identity),
        ("projector.3.weight", fc2.kernel, linear_kernel),
        ("projector.4.running_mean", bn2.moving_mean, _identity),
        ("projector.4.running_var", bn2.moving_variance, _identity),
    ]
    return [(key, variable, fn(state[key])) for key, variable, fn in pairs]

def load_encoder_weights(encoder, state, grid, atol):
    pos = np.asarray(state["pos_embed"])[0]
    check_position_table("pos_embed (patch rows)", pos[1:], grid, encoder.hidden_dim, False, atol)
    if np.any(pos[0] != 0):
        logger.info("pos_embed's [CLS] row is not zero: folded into cls_token.")
    assignments = [
        ("patch_embed.proj.weight", encoder.patch_embedding.projection.kernel,
         patch_kernel(state["patch_embed.proj.weight"])),
        ("patch_embed.proj.bias", encoder.patch_embedding.projection.bias,
         np.asarray(state["patch_embed.proj.bias"])),
        # The project adds no position to [CLS]: MAE's row 0 goes into the token.
        ("cls_token", encoder.cls_token, np.asarray(state["cls_token"]) + pos[None, :1]),
        ("norm.weight", encoder.norm.gamma, np.asarray(state["norm.weight"])),
        ("norm.bias", encoder.norm.beta, np.asarray(state["norm.bias"])),
    ]
    for i, block in enumerate(encoder.blocks):
        assignments += _block_assignments("blocks", i, block, state)
    assign_weights(assignments)


def load_decoder_weights(decoder, state, grid, atol):
    check_position_table("decoder_pos_embed", np.asarray(state["decoder_pos_embed"])[0], grid,
                 decoder.hidden_dim, True, atol)
    assignments = [
        ("decoder_embed.weight", decoder.embed.kernel, linear_kernel(state["decoder_embed.weight"])),
        ("decoder_embed.bias", decoder.embed.bias, np.asarray(state["decoder_embed.bias"])),
        ("mask_token", decoder.mask_token, np.asarray(state["mask_token"])),
        ("decoder_norm.weight", decoder.norm.gamma, np.asarray(state["decoder_norm.weight"])),
        ("decoder_norm.bias", decoder.norm.beta, np.asarray(state["decoder_norm.bias"])),
        ("decoder_pred.weight", decoder.head.kernel, linear_kernel(state["decoder_pred.weight"])),
        ("decoder_pred.bias", decoder.head.bias, np.asarray(state["decoder_pred.bias"])),
    ]
    for i, block in enumerate(decoder.blocks):
        assignments += _block_assignments("decoder_blocks", i, block, state)
    assign_weights(assignments)

