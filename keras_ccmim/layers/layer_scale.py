"""LayerScale: a learned per-channel scale on a residual branch (CaiT)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ccmim")
class LayerScale(keras.layers.Layer):
    """Multiplies `[..., D]` inputs by a learned `[D]` vector.

    Args:
        init_value: initial value of every channel's scale.
    """

    def __init__(self, init_value=1e-5, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"init_value": self.init_value})
        return config
