"""Stochastic depth: drop a whole residual branch per sample."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim.type_aliases import Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class DropPath(keras.layers.Layer):
    """Zeroes the residual branch of a random subset of samples.

    Surviving samples are scaled by `1 / (1 - rate)` so the expectation is
    unchanged. Identity at inference.

    Args:
        rate: float in [0, 1), the probability of dropping a sample's branch.
        seed: optional int seed for the layer's `SeedGenerator`.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate}.")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Tensor, training: bool | None = False) -> Tensor:
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        return inputs * ops.cast(noise < keep, inputs.dtype) / keep

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config
