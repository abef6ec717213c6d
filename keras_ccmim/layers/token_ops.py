"""Small token helpers shared by the encoder, the decoder and the heads:
selecting tokens per sample and pooling them."""

from __future__ import annotations

from typing import Literal, get_args

from keras import ops

from keras_ccmim.type_aliases import Tensor


def gather_tokens(tokens: Tensor, ids: Tensor) -> Tensor:
    """Select tokens per sample.

    Args:
        tokens: `[B, N, D]`.
        ids: `[B, n]` integer indices into the N axis.

    Returns:
        `[B, n, D]` with `out[b, i] = tokens[b, ids[b, i]]`.
    """
    return ops.take_along_axis(tokens, ops.expand_dims(ids, -1), axis=1)


# What `pool_tokens` (and `ViTEncoder(pooling=...)`) makes of the tokens.
Pooling = Literal[None, "cls", "mean"]
POOLINGS = get_args(Pooling)


def pool_tokens(tokens: Tensor, pooling: Pooling) -> Tensor:
    """An encoder's tokens pooled to one vector per image.

    Args:
        tokens: `[B, 1+N, D]`, row 0 the [CLS] token.
        pooling: `None` (the tokens as they are), `"cls"` (row 0) or
            `"mean"` (the mean of the N patch tokens, MAE's and ccMIM's
            image feature).

    Returns:
        `[B, 1+N, D]` for `None`, else `[B, D]`.
    """
    if pooling is None:
        return tokens
    if pooling == "cls":
        return tokens[:, 0]
    if pooling == "mean":
        return ops.mean(tokens[:, 1:], axis=1)
    raise ValueError(f"Unknown pooling {pooling!r}; choose None, 'cls' or 'mean'.")
