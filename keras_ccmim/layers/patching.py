"""Splitting images into patches and back, and the linear patch embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim.type_aliases import Tensor


def _static_dim(value, what):
    if value is None:
        raise ValueError(
            f"{what} must be known statically (got None). Give the model "
            "inputs of a fixed image size."
        )
    return int(value)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping square patches, row-major.

    Args:
        images: `[B, H, W, C]`; `H` and `W` multiples of `patch_size`.
        patch_size: int, the side `p` of a patch.

    Returns:
        `[B, N, p*p*C]` with `N = (H/p)*(W/p)`; patch `n = i*(W/p) + j` holds
        the pixels of rows `i*p:(i+1)*p` and columns `j*p:(j+1)*p`, flattened
        in `(p, p, C)` order.
    """
    shape = ops.shape(images)
    height = _static_dim(shape[1], "image height")
    width = _static_dim(shape[2], "image width")
    channels = _static_dim(shape[3], "number of channels")
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Image size {height}x{width} is not divisible by the patch size "
            f"{patch_size}. Resize or crop the images to a multiple of "
            f"{patch_size}, or pick a patch size that divides {height}x{width}."
        )
    gh, gw = height // patch_size, width // patch_size
    x = ops.reshape(images, (-1, gh, patch_size, gw, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * gw, patch_size * patch_size * channels))


def unpatchify(
    patches: Tensor, patch_size: int, grid_size: int | Sequence[int], channels: int = 3
) -> Tensor:
    """Inverse of `patchify`.

    Args:
        patches: `[B, N, p*p*C]`.
        patch_size: int `p`.
        grid_size: `(H/p, W/p)` or an int for a square grid.
        channels: int `C`.

    Returns:
        `[B, H, W, C]`.
    """
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    num_patches = _static_dim(ops.shape(patches)[1], "number of patches")
    if num_patches != gh * gw:
        raise ValueError(
            f"Got {num_patches} patches but the grid {gh}x{gw} has "
            f"{gh * gw}. Pass the grid_size the patches were cut with."
        )
    x = ops.reshape(patches, (-1, gh, gw, patch_size, patch_size, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, gh * patch_size, gw * patch_size, channels))


@keras.saving.register_keras_serializable(package="keras_ccmim")
class PatchEmbedding(keras.layers.Layer):
    """Linear embedding of image patches.

    A Dense layer on the patchified image, which is the same function as the
    usual strided `Conv2D(hidden_dim, patch_size, strides=patch_size)`.

    Args:
        patch_size: int `p`.
        hidden_dim: int `D`, the embedding width.

    Call: `images [B, H, W, C]` -> `[B, N, D]`.
    """

    def __init__(self, patch_size: int, hidden_dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.patch_size = int(patch_size)
        self.hidden_dim = int(hidden_dim)
        self.projection = keras.layers.Dense(
            self.hidden_dim,
            kernel_initializer="glorot_uniform",
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape: Sequence[int | None]) -> None:
        channels = input_shape[-1]
        self.projection.build((None, None, self.patch_size**2 * channels))

    def call(self, images: Tensor) -> Tensor:
        return self.projection(patchify(images, self.patch_size))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        b, h, w, _ = input_shape
        p = self.patch_size
        n = None if h is None or w is None else (h // p) * (w // p)
        return (b, n, self.hidden_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"patch_size": self.patch_size, "hidden_dim": self.hidden_dim})
        return config
