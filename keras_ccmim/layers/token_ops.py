"""Small token-indexing helpers shared by the encoder and the decoder."""

from keras import ops


def gather_tokens(tokens, ids):
    """Select tokens per sample.

    Args:
        tokens: `[B, N, D]`.
        ids: `[B, n]` integer indices into the N axis.

    Returns:
        `[B, n, D]` with `out[b, i] = tokens[b, ids[b, i]]`.
    """
    return ops.take_along_axis(tokens, ops.expand_dims(ids, -1), axis=1)
