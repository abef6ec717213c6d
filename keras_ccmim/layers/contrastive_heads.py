"""The projector and predictor of the contrastive branch (ccMIM step 8)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim import backend_specific
from keras_ccmim.type_aliases import Tensor


def _mlp(hidden_dim, output_dim, affine_output, dtype, prefix):
    # Batch statistics of the global batch: synchronised across the replicas
    # of tf.distribute (JAX's data parallelism sees the global batch anyway).
    synchronized = backend_specific.sync_batch_norm()
    return [
        keras.layers.Dense(hidden_dim, use_bias=False, dtype=dtype, name=f"{prefix}fc1"),
        keras.layers.BatchNormalization(
            epsilon=1e-5, synchronized=synchronized, dtype=dtype, name=f"{prefix}bn1"
        ),
        keras.layers.ReLU(dtype=dtype, name=f"{prefix}relu"),
        keras.layers.Dense(output_dim, use_bias=False, dtype=dtype, name=f"{prefix}fc2"),
        keras.layers.BatchNormalization(
            epsilon=1e-5, center=affine_output, scale=affine_output, synchronized=synchronized,
            dtype=dtype, name=f"{prefix}bn2"
        ),
    ]


class _TwoLayerMLP(keras.layers.Layer):
    """Linear(no bias) - BN - ReLU - Linear(no bias) - BN; the BatchNorms
    use the statistics of the global batch on every backend.

    `call(x, training=None, update_moving_statistics=True)`: in training
    the BatchNorms normalise with the batch's statistics and, unless
    `update_moving_statistics=False`, fold them into their moving mean and
    variance (with `False` those are left exactly as they were).
    """

    affine_output = False

    def __init__(self, hidden_dim: int | None = None, output_dim: int = 256, **kwargs: Any):
        super().__init__(**kwargs)
        self.hidden_dim = None if hidden_dim is None else int(hidden_dim)
        self.output_dim = int(output_dim)
        self.mlp = None

    def build(self, input_shape: Sequence[int | None]) -> None:
        hidden = self.hidden_dim or int(input_shape[-1])
        self.mlp = _mlp(hidden, self.output_dim, self.affine_output, self.dtype_policy, "")
        shape = tuple(input_shape)
        for layer in self.mlp:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def call(
        self, x: Tensor, training: bool | None = None, update_moving_statistics: bool = True
    ) -> Tensor:
        if training and not update_moving_statistics:
            # Keras' BatchNormalization has no "batch statistics without the
            # update" mode: keep the moving values and put them back after.
            kept = [
                (variable, ops.copy(variable.value))
                for layer in self.mlp
                if isinstance(layer, keras.layers.BatchNormalization)
                for variable in (layer.moving_mean, layer.moving_variance)
            ]
        for layer in self.mlp:
            x = layer(x, training=training) if isinstance(
                layer, keras.layers.BatchNormalization
            ) else layer(x)
        if training and not update_moving_statistics:
            for variable, value in kept:
                variable.assign(value)
        return x

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"hidden_dim": self.hidden_dim, "output_dim": self.output_dim})
        return config


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ProjectionHead(_TwoLayerMLP):
    """The projector `g`: Linear(D, hidden) - BN - ReLU - Linear(hidden, out) -
    BN without affine, as the public ccMIM code.

    Args:
        hidden_dim: hidden width; `None` uses the input width `D`.
        output_dim: projection width (256).

    Call: `[B, D]` -> `[B, output_dim]`.
    """

    affine_output = False


@keras.saving.register_keras_serializable(package="keras_ccmim")
class PredictionHead(_TwoLayerMLP):
    """The predictor `q` of the `align` loss (paper eq. 8): the same
    two-layer MLP shape with an affine final BatchNorm.

    Args:
        hidden_dim: hidden width; `None` uses the input width.
        output_dim: output width, equal to the projector's.
    """

    affine_output = True
