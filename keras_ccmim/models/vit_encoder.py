"""The ViT encoder: embeds patches and encodes any subset of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim import checks
from keras_ccmim.layers.image_normalization import check_image_shape
from keras_ccmim.layers.layer_norm import LayerNormalization
from keras_ccmim.layers.patching import PatchEmbedding
from keras_ccmim.layers.position_embedding import SinCosPositionEmbedding
from keras_ccmim.layers.token_ops import POOLINGS, Pooling, gather_tokens, pool_tokens
from keras_ccmim.layers.transformer_block import (
    ClsAttentionKind,
    ClsLogitScale,
    TransformerBlock,
)
from keras_ccmim.models.preset_files import (
    encoder_preset,
    load_from_preset,
    load_preprocessing,
    save_to_preset,
)
from keras_ccmim.models.presets import get_preset
from keras_ccmim.type_aliases import PathLike, Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ViTEncoder(keras.Model):
    """Vision Transformer encoder with a learned [CLS] token.

    A `keras.Model` (so it saves and loads weights on its own) used as a
    layer inside the pretrainer.

    The encoder is split into the stages the pretrainer needs:

    * `embed(images)`: patch embedding plus the fixed 2-D sin-cos position
      embedding, `[B, H, W, C]` -> `[B, N, D]` (positions are added before
      any token is dropped);
    * `encode(patch_tokens, ids)`: `[CLS]` (zero position) plus the selected
      patch tokens through all blocks and the final norm, `[B, 1+n, D]`;
    * `cls_attention(patch_tokens, layer_indices)`: the [CLS] attention maps
      `[B, N]` at the given blocks, running only up to the deepest of them.

    `call(images)` is `encode(embed(images))` over all patches, pooled by
    `pooling`. The stages ignore `pooling`, so pretraining does too.

    `from_architecture(name)` builds a named architecture with random
    weights; `from_preset(preset)` loads trained weights (a folder written
    by `save_to_preset`, or a `kaggle://` / `hf://` handle of one).

    Args:
        image_size: int or `(H, W)`.
        patch_size: int `p`; must divide the image size.
        hidden_dim: width `D`.
        num_layers: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of `D`.
        num_channels: image channels `C`.
        qkv_bias: bias in the query/key/value projection.
        drop_path_rate: stochastic depth, rising linearly to this value over
            the blocks.
        layer_scale_init_value: LayerScale initial value, `None` for none.
        layer_norm_epsilon: LayerNorm epsilon.
        seed: optional seed for the stochastic-depth `SeedGenerator`s.
        pooling: what `call` returns: `None`, the tokens `[B, 1+N, D]`;
            `"cls"`, the [CLS] token `[B, D]`; `"mean"`, the mean of the
            patch tokens `[B, D]` (MAE's and ccMIM's image feature).

    Call: `images [B, H, W, C]` at `image_size` (ImageNet-normalised
        floats; see `keras_ccmim.layers.ImageNormalization`) -> `[B, 1+N, D]`
        or `[B, D]` (`pooling`). Another image size is a ValueError.
    """

    def __init__(
        self,
        image_size: int | Sequence[int],
        patch_size: int,
        hidden_dim: int,
        num_layers: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_channels: int = 3,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        seed: int | None = None,
        pooling: Pooling = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {pooling!r}; choose None, 'cls' or 'mean'.")
        sizes = [image_size] if checks.is_int(image_size) else list(image_size)
        for size in sizes:
            checks.check_int("image_size", size, 1)
        image_size = (sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes)
        for name, value in (("patch_size", patch_size), ("hidden_dim", hidden_dim),
                            ("num_layers", num_layers), ("num_heads", num_heads)):
            checks.check_int(name, value, 1)
        if image_size[0] % patch_size or image_size[1] % patch_size:
            shown = image_size[0] if image_size[0] == image_size[1] else "x".join(
                str(s) for s in image_size)
            multiple = max(image_size[0] // patch_size, 1) * patch_size
            raise ValueError(
                f"image_size {shown} is not divisible by patch_size {patch_size}. Use an "
                f"image size that is a multiple of the patch size (e.g. {multiple}) or "
                "another patch size."
            )
        if hidden_dim % num_heads or hidden_dim % 4:
            raise ValueError(
                f"hidden_dim {hidden_dim} must be divisible by num_heads ({num_heads}) and by "
                "4 (sin-cos position embedding)."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.num_channels = int(num_channels)
        self.qkv_bias = bool(qkv_bias)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_scale_init_value = (
            None if layer_scale_init_value is None else float(layer_scale_init_value)
        )
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.seed = seed
        self.pooling = pooling
        self.grid_size = (image_size[0] // patch_size, image_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]

        policy = self.dtype_policy
        self.patch_embedding = PatchEmbedding(
            patch_size, self.hidden_dim, dtype=policy, name="patch_embedding"
        )
        self.position_embedding = SinCosPositionEmbedding(
            self.grid_size, dtype=policy, name="position_embedding"
        )
        rates = [
            self.drop_path_rate * i / max(self.num_layers - 1, 1) for i in range(self.num_layers)
        ]
        self.blocks = [
            TransformerBlock(
                self.hidden_dim,
                self.num_heads,
                mlp_ratio=self.mlp_ratio,
                qkv_bias=self.qkv_bias,
                drop_path_rate=rates[i],
                layer_scale_init_value=self.layer_scale_init_value,
                layer_norm_epsilon=self.layer_norm_epsilon,
                seed=None if seed is None else seed + i,
                dtype=policy,
                name=f"block_{i}",
            )
            for i in range(self.num_layers)
        ]
        self.norm = LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm"
        )

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        h, w = self.image_size
        d = self.hidden_dim
        self.patch_embedding.build((None, h, w, self.num_channels))
        self.position_embedding.build((None, self.num_patches, d))
        self.cls_token = self.add_weight(
            name="cls_token",
            shape=(1, 1, d),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
        )
        for block in self.blocks:
            block.build((None, self.num_patches + 1, d))
        self.norm.build((None, None, d))

    @property
    def _owner(self):
        return f"ViTEncoder {self.name!r}"

    def embed(self, images: Tensor) -> Tensor:
        """`[B, H, W, C]` -> position-embedded patch tokens `[B, N, D]`."""
        check_image_shape(images.shape, self.image_size, self.num_channels, self._owner)
        self._ensure_built()
        return self.position_embedding(self.patch_embedding(images))

    def _ensure_built(self):
        if not self.built:
            self.build()
            self.built = True

    def _prepend_cls(self, tokens):
        self._ensure_built()
        cls = ops.broadcast_to(
            ops.cast(self.cls_token, tokens.dtype), (ops.shape(tokens)[0], 1, self.hidden_dim)
        )
        return ops.concatenate([cls, tokens], axis=1)

    def encode(
        self, patch_tokens: Tensor, ids: Tensor | None = None, training: bool | None = None
    ) -> Tensor:
        """Encode [CLS] plus the patches `ids` (all patches when None).

        Args:
            patch_tokens: `[B, N, D]` from `embed`.
            ids: optional `[B, n]` patch indices.

        Returns:
            `[B, 1+n, D]`, normalised; row 0 is [CLS].
        """
        if ids is not None:
            patch_tokens = gather_tokens(patch_tokens, ids)
        x = self._prepend_cls(patch_tokens)
        for block in self.blocks:
            x = block(x, training=training)
        return self.norm(x)

    def cls_attention(
        self,
        patch_tokens: Tensor,
        layer_indices: Sequence[int],
        kind: ClsAttentionKind = "probabilities",
        scale: ClsLogitScale = "head_dim",
        training: bool | None = None,
    ) -> list[Tensor]:
        """[CLS] attention maps at the given blocks, over all N patches.

        Blocks past the deepest requested one are not run, and in that block
        only the [CLS] attention row is computed.

        Args:
            patch_tokens: `[B, N, D]` from `embed`.
            layer_indices: sorted block indices.
            kind: `"probabilities"` (head-averaged softmax over all keys,
                patch columns) or `"logits"` (head-averaged scaled logits of
                the patch keys); see `TransformerBlock`.
            scale: what divides the logits of `kind="logits"`: `"head_dim"`
                (`sqrt(D / num_heads)`, as the attention) or `"hidden_dim"`
                (`sqrt(D)`, the paper's formula as written).
            training: passed to the blocks run before the deepest one (their
                drop path); `None` follows the caller's Keras call context.

        Returns:
            list of `[B, N]` float32 maps, one per index.
        """
        layer_indices = sorted(set(int(i) for i in layer_indices))
        deepest = layer_indices[-1]
        x = self._prepend_cls(patch_tokens)
        maps = []
        options = dict(cls_attention_kind=kind, cls_attention_scale=scale)
        for i, block in enumerate(self.blocks[: deepest + 1]):
            if i == deepest:
                maps.append(block(x, cls_attention_only=True, **options))
            elif i in layer_indices:
                x, attention = block(x, training=training, return_cls_attention=True, **options)
                maps.append(attention)
            else:
                x = block(x, training=training)
        return maps

    def block_features(
        self, images: Tensor, layer_indices: Sequence[int], training: bool | None = None
    ) -> list[Tensor]:
        """Patch-token maps after the given blocks, for dense heads.

        Runs the blocks up to the deepest index (all patches, with [CLS])
        and returns, for each index in the given order (repeats allowed),
        that block's output without [CLS] and without the final norm,
        reshaped to the patch grid. `call`'s output is unchanged.

        Args:
            images: `[B, H, W, C]` at this encoder's `image_size`.
            layer_indices: block indices in `[0, num_layers)`.

        Returns:
            list of `[B, H / p, W / p, D]` tensors.
        """
        indices = [int(i) for i in layer_indices]
        if not indices or min(indices) < 0 or max(indices) >= self.num_layers:
            raise ValueError(
                f"layer_indices must be block indices in [0, {self.num_layers}), got "
                f"{list(layer_indices)}."
            )
        rows, cols = self.grid_size
        x = self._prepend_cls(self.embed(images))
        outputs = {}
        for i, block in enumerate(self.blocks[: max(indices) + 1]):
            x = block(x, training=training)
            if i in indices:
                outputs[i] = ops.reshape(x[:, 1:], (-1, rows, cols, self.hidden_dim))
        return [outputs[i] for i in indices]

    def call(self, images: Tensor, training: bool | None = None) -> Tensor:
        return pool_tokens(self.encode(self.embed(images), training=training), self.pooling)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        check_image_shape(input_shape, self.image_size, self.num_channels, self._owner)
        if self.pooling is None:
            return (input_shape[0], self.num_patches + 1, self.hidden_dim)
        return (input_shape[0], self.hidden_dim)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "image_size": list(self.image_size),
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "num_channels": self.num_channels,
                "qkv_bias": self.qkv_bias,
                "drop_path_rate": self.drop_path_rate,
                "layer_scale_init_value": self.layer_scale_init_value,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "seed": self.seed,
                "pooling": self.pooling,
            }
        )
        return config

    @classmethod
    def from_architecture(cls, name: str, **overrides: Any) -> ViTEncoder:
        """An encoder of a named architecture with random weights, unbuilt.

        Args:
            name: an architecture name or alias (`"vit_base_patch16_224"`,
                `"B/16"`; see `keras_ccmim.models.presets`).
            **overrides: constructor arguments to change (`image_size`,
                `pooling`, ...).
        """
        return cls(**dict(get_preset(name)["encoder"], **overrides))

    @classmethod
    def from_preset(
        cls, preset: PathLike, preprocessing: bool = False, **overrides: Any
    ) -> ViTEncoder | keras.Sequential:
        """A trained encoder from a preset, built, with its weights.

        Args:
            preset: a folder written by `save_to_preset` (a pretraining run
                writes `<workdir>/encoder`) or a `kaggle://` / `hf://` handle
                of one. An architecture name is refused: its weights would
                be random (`from_architecture` says so).
            preprocessing: also put the preset's `ImageNormalization` in
                front: the result is a `keras.Sequential` taking raw images
                (uint8 RGB in `[0, 255]`, as the preset records).
            **overrides: constructor arguments to change, e.g.
                `image_size=48` (the weights do not depend on the image
                size; the position table is recomputed) or `pooling="mean"`.
        """
        encoder = load_from_preset(preset, cls, overrides)
        if not preprocessing:
            return encoder
        images = load_preprocessing(preset, image_size=encoder.image_size)
        return keras.Sequential([images, encoder], name=f"{encoder.name}_with_preprocessing")

    def save_to_preset(self, preset_dir: PathLike) -> str:
        """Writes this (built) encoder as a preset folder in keras-hub's
        layout (see `keras_ccmim.models.preset_files`)."""
        return save_to_preset(self, preset_dir)


def load_encoder(source: PathLike, **overrides: Any) -> ViTEncoder:
    """The trained `ViTEncoder` of a pretraining workdir (its `encoder/`
    preset) or of a preset folder or handle, built, with its weights.

    `overrides` change constructor arguments the weights do not depend on
    (`image_size`, `drop_path_rate`, `pooling`).
    """
    return ViTEncoder.from_preset(encoder_preset(source), **overrides)
