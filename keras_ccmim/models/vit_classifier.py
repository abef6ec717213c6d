"""`ViTClassifier`: a `ViTEncoder` with MAE's fine-tuning head, and the
layer ids that layer-wise learning-rate decay scales by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from keras_ccmim.layers.token_ops import pool_tokens
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.type_aliases import Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ViTClassifier(keras.Model):
    """A `ViTEncoder` with MAE's fine-tuning head.

    The patch tokens (after the encoder's own norm) are averaged, normalised
    by a final LayerNorm (`fc_norm`) and classified by a linear head
    initialised with std 2e-5, as in MAE.

    Args:
        encoder: a `ViTEncoder` (its `drop_path_rate` is the stochastic depth
            used while fine-tuning).
        num_classes: int.
        head_init_std: std of the head's truncated-normal kernel init.

    Call: `images [B, H, W, C]` (normalised) -> logits `[B, num_classes]`.
    """

    def __init__(
        self, encoder: ViTEncoder, num_classes: int, head_init_std: float = 2e-5, **kwargs: Any
    ):
        super().__init__(**kwargs)
        if not isinstance(encoder, ViTEncoder):
            raise TypeError(
                f"encoder must be a keras_ccmim ViTEncoder, got {type(encoder).__name__}."
            )
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        self.encoder = encoder
        self.num_classes = int(num_classes)
        self.head_init_std = float(head_init_std)
        self.fc_norm = keras.layers.LayerNormalization(
            epsilon=encoder.layer_norm_epsilon, dtype=self.dtype_policy, name="fc_norm"
        )
        self.head = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=keras.initializers.TruncatedNormal(stddev=self.head_init_std),
            dtype=self.dtype_policy,
            name="head",
        )

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if not self.encoder.built:
            self.encoder.build()
        self.fc_norm.build((None, self.encoder.hidden_dim))
        self.head.build((None, self.encoder.hidden_dim))
        self.built = True

    def call(self, images: Tensor, training: bool | None = None) -> Tensor:
        encoder = self.encoder  # its stages: the tokens, whatever its `pooling`
        tokens = encoder.encode(encoder.embed(images), training=training)
        return self.head(self.fc_norm(pool_tokens(tokens, "mean")))

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_classes)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes,
                "head_init_std": self.head_init_std,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ViTClassifier:
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def layer_ids(model: ViTClassifier) -> dict[str, int]:
    """`{variable path: layer id}` over a `ViTClassifier`'s trainable variables.

    Layer 0 is the embedding (patch embedding, [CLS], positions), `i + 1` is
    block `i`, and `num_layers + 1` is everything after the blocks (the
    encoder's norm, `fc_norm`, the head).
    """
    if not model.built:
        model.build()
    encoder = model.encoder
    last = encoder.num_layers + 1
    ids = {v.path: last for v in model.trainable_variables}
    for v in encoder.patch_embedding.trainable_variables:
        ids[v.path] = 0
    for v in encoder.position_embedding.trainable_variables:
        ids[v.path] = 0
    ids[encoder.cls_token.path] = 0
    for index, block in enumerate(encoder.blocks):
        for v in block.trainable_variables:
            ids[v.path] = index + 1
    return ids
