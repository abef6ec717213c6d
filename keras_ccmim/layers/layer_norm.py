"""LayerNormalization with a fast JAX gradient, a drop-in for Keras' layer."""

from __future__ import annotations

import keras
from keras import ops

from keras_ccmim import backend_specific
from keras_ccmim.type_aliases import Tensor


@keras.saving.register_keras_serializable(package="keras_ccmim")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` with the backend's fast path.

    Same constructor, config, weights (`gamma`, `beta`) and results as
    Keras' layer. Normalising over the last axis with both `gamma` and
    `beta` (the ViT case), it uses `backend_specific.layer_norm_fn()` where
    the backend has one: on JAX on CPU a `jax.custom_vjp` with a
    hand-written backward pass, which XLA compiles better there than the
    automatic one (measured in docs/performance/). Other backends and
    configurations run Keras' `call`.

    The class keeps Keras' name on purpose: a `.weights.h5` file addresses
    a layer held in a list (e.g. `keras.Model.layers`) by its snake-cased
    class name (`layers/layer_normalization/vars`), so any other name would
    stop the encoder's existing checkpoints from loading.

    Like Keras' layer, it computes in at least float32 and returns the
    layer's compute dtype.
    """

    def _has_fast_path(self, inputs):
        return (
            not self.rms_scaling
            and self.gamma is not None
            and self.beta is not None
            and list(self.axis) in ([-1], [len(inputs.shape) - 1])
        )

    def call(self, inputs: Tensor) -> Tensor:
        fn = backend_specific.layer_norm_fn()
        if fn is None or not self._has_fast_path(inputs):
            return super().call(inputs)
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        outputs = fn(
            ops.cast(inputs, dtype),
            ops.cast(self.gamma, dtype),
            ops.cast(self.beta, dtype),
            float(self.epsilon),
        )
        return ops.cast(outputs, self.compute_dtype)
