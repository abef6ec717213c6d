"""Fixed 2-D sine-cosine position embedding (MAE's) and a layer adding it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_ccmim.type_aliases import Tensor


def sincos_1d(dim: int, positions: ArrayLike) -> np.ndarray:
    """`[M]` positions -> `[M, dim]`: sines in the first half, cosines after."""
    if dim % 2:
        raise ValueError(f"The 1-D sin-cos embedding needs an even width, got {dim}.")
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000.0**omega
    angles = np.outer(np.asarray(positions, np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d_position_embedding(
    grid_size: int | Sequence[int], dim: int, cls_token: bool = False
) -> np.ndarray:
    """MAE's fixed 2-D sin-cos position embedding.

    Half of the channels encode the column of a patch, the other half its row
    (column first, as MAE's reference code lays them out).

    Args:
        grid_size: int or `(rows, cols)`.
        dim: embedding width, a multiple of 4.
        cls_token: if True, a row of zeros for [CLS] is prepended.

    Returns:
        float32 numpy array `[rows*cols (+1), dim]`, patches row-major.
    """
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    if dim % 4:
        raise ValueError(
            f"The 2-D sin-cos position embedding needs a width divisible by 4, got {dim}."
        )
    row_index, col_index = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    emb = np.concatenate(
        [sincos_1d(dim // 2, col_index), sincos_1d(dim // 2, row_index)], axis=1
    )
    if cls_token:
        emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
    return emb.astype("float32")


@keras.saving.register_keras_serializable(package="keras_ccmim")
class SinCosPositionEmbedding(keras.layers.Layer):
    """Adds the fixed 2-D sin-cos position embedding to patch tokens.

    The table is a non-trainable weight (so exported models carry it). It is
    a function of the grid and the width alone, so loading weights saved at
    another image size (another grid) keeps the table computed for this
    layer's grid: an encoder's weights load at any image size.

    Args:
        grid_size: int or `(rows, cols)` of the patch grid.

    Call: `tokens [B, rows*cols, D]` -> same shape.
    """

    def __init__(self, grid_size: int | Sequence[int], **kwargs: Any):
        super().__init__(**kwargs)
        self.grid_size = (
            (int(grid_size), int(grid_size))
            if isinstance(grid_size, int)
            else tuple(int(g) for g in grid_size)
        )

    def build(self, input_shape: Sequence[int | None]) -> None:
        dim = int(input_shape[-1])
        table = sincos_2d_position_embedding(self.grid_size, dim)
        self.embedding = self.add_weight(
            name="embedding",
            shape=table.shape,
            initializer=keras.initializers.Constant(table),
            trainable=False,
        )

    def call(self, tokens: Tensor) -> Tensor:
        return tokens + ops.cast(self.embedding, tokens.dtype)[None]

    def load_own_variables(self, store: Any) -> None:
        # The saved table is the same function of another (or the same)
        # grid: recomputing it for this grid is what loading it means.
        if len(store.keys()) != 1:
            raise ValueError(
                f"Layer {self.name!r} holds one weight (the sin-cos table) but the file has "
                f"{len(store.keys())} for it; the file was written by another model."
            )
        saved = store["0"]
        if int(saved.shape[-1]) != int(self.embedding.shape[-1]):
            raise ValueError(
                f"Layer {self.name!r}: the saved position table is {int(saved.shape[-1])} wide "
                f"but this encoder is {int(self.embedding.shape[-1])} wide; load weights saved "
                "by an encoder of the same hidden_dim."
            )

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"grid_size": list(self.grid_size)})
        return config
