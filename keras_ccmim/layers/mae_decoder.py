"""The MAE-style decoder (ccMIM step 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim.layers.layer_norm import LayerNormalization
from keras_ccmim.layers.position_embedding import sincos_2d_position_embedding
from keras_ccmim.layers.token_ops import gather_tokens
from keras_ccmim.layers.transformer_block import TransformerBlock
from keras_ccmim.type_aliases import Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class MAEDecoder(keras.layers.Layer):
    """Reconstructs every patch from the encoded visible tokens.

    Linear to the decoder width, a learned mask token at every masked
    position (unshuffled with `ids_restore`), the decoder's fixed sin-cos
    position embedding, transformer blocks, a final norm, and a linear map to
    `p*p*C` pixel values; the [CLS] output is dropped.

    Args:
        grid_size: int or `(rows, cols)`, the patch grid (`N = rows*cols`).
        patch_dim: int, `p*p*C`, values predicted per patch.
        hidden_dim: decoder width.
        num_layers: decoder depth.
        num_heads: attention heads per decoder block.
        mlp_ratio: MLP width multiple.
        layer_norm_epsilon: LayerNorm epsilon.

    Call:
        latent: `[B, 1+V, D_enc]`, the encoder output for [CLS] + visible.
        ids_restore: `[B, N]`.
        Returns `pred [B, N, patch_dim]`.
    """

    def __init__(
        self,
        grid_size: int | Sequence[int],
        patch_dim: int,
        hidden_dim: int = 512,
        num_layers: int = 8,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        layer_norm_epsilon: float = 1e-6,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.grid_size = (
            (int(grid_size), int(grid_size))
            if isinstance(grid_size, int)
            else tuple(int(g) for g in grid_size)
        )
        self.patch_dim = int(patch_dim)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

        policy = self.dtype_policy
        self.embed = keras.layers.Dense(self.hidden_dim, dtype=policy, name="embed")
        self.blocks = [
            TransformerBlock(
                self.hidden_dim,
                self.num_heads,
                mlp_ratio=self.mlp_ratio,
                layer_norm_epsilon=self.layer_norm_epsilon,
                dtype=policy,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.norm = LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm"
        )
        self.head = keras.layers.Dense(self.patch_dim, dtype=policy, name="head")

    def build(
        self,
        latent_shape: Sequence[int | None],
        ids_restore_shape: Sequence[int | None] | None = None,
    ) -> None:
        d = self.hidden_dim
        self.embed.build(latent_shape)
        self.mask_token = self.add_weight(
            name="mask_token",
            shape=(1, 1, d),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        table = sincos_2d_position_embedding(self.grid_size, d, cls_token=True)
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=table.shape,
            initializer=keras.initializers.Constant(table),
            trainable=False,
        )
        for block in self.blocks:
            block.build((None, self.num_patches + 1, d))
        self.norm.build((None, None, d))
        self.head.build((None, None, d))

    def call(self, latent: Tensor, ids_restore: Tensor, training: bool | None = None) -> Tensor:
        x = self.embed(latent)
        batch = ops.shape(x)[0]
        num_masked = self.num_patches + 1 - ops.shape(x)[1]
        mask_tokens = ops.broadcast_to(
            ops.cast(self.mask_token, x.dtype), (batch, num_masked, self.hidden_dim)
        )
        patches = ops.concatenate([x[:, 1:], mask_tokens], axis=1)
        patches = gather_tokens(patches, ids_restore)
        x = ops.concatenate([x[:, :1], patches], axis=1)
        x = x + ops.cast(self.position_embedding, x.dtype)[None]
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(self.norm(x))[:, 1:]

    def compute_output_shape(
        self,
        latent_shape: Sequence[int | None],
        ids_restore_shape: Sequence[int | None] | None = None,
    ) -> tuple[int | None, ...]:
        return (latent_shape[0], self.num_patches, self.patch_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "grid_size": list(self.grid_size),
                "patch_dim": self.patch_dim,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config
