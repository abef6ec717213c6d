"""LayerScale: a learned per-channel scale on a residual branch (CaiT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim.type_aliases import Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class LayerScale(keras.layers.Layer):
    """Multiplies `[..., D]` inputs by a learned `[D]` vector.

    Args:
        init_value: initial value of every channel's scale.
    """

    def __init__(self, init_value: float = 1e-5, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, inputs: Tensor) -> Tensor:
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"init_value": self.init_value})
        return config
