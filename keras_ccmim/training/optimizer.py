"""AdamW as in MAE and ccMIM: no weight decay on biases, norms, tokens,
positions; and `LayerDecayAdamW`, fine-tuning's layer-wise lr decay."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from keras_ccmim.type_aliases import Tensor

# Variables with these names are never decayed, whatever their rank.
NO_DECAY_NAMES = ("cls_token", "mask_token", "position_embedding")


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int) -> float:
    """MAE's linear scaling rule: `lr = blr * global_batch / 256`."""
    if not float(base_learning_rate) > 0:
        raise ValueError(f"base_learning_rate must be positive, got {base_learning_rate}.")
    if int(global_batch_size) <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
    return float(base_learning_rate) * int(global_batch_size) / 256.0


def training_steps(optimizer: keras.optimizers.Optimizer) -> keras.Variable:
    """Training steps the optimizer has taken (batches it has seen): its
    `iterations`, except under gradient accumulation, where Keras'
    `iterations` counts updates and its step counter (`_iterations`, saved
    with the optimizer's variables) counts the batches."""
    counter = getattr(optimizer, "_iterations", None)
    return optimizer.iterations if counter is None else counter


def is_decayed(variable: keras.Variable) -> bool:
    """False for biases, norm scales/offsets and other vectors (`ndim <= 1`),
    and for variables named like `NO_DECAY_NAMES` ([CLS], mask token,
    position embeddings)."""
    if len(variable.shape) <= 1:
        return False
    path = getattr(variable, "path", variable.name)
    return not any(name in path for name in NO_DECAY_NAMES)


def make_optimizer(
    model: keras.Model,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    weight_decay: float = 0.05,
    beta_1: float = 0.9,
    beta_2: float = 0.95,
    accum_steps: int = 1,
) -> keras.optimizers.AdamW:
    """AdamW over `model.trainable_variables`, decaying matrices only.

    Builds `model` first if needed (its variables decide what is excluded).

    Args:
        model: a built or buildable `keras.Model` (e.g. a `CCMIMPretrainer`).
        learning_rate: float or a `LearningRateSchedule` (see `warmup_cosine`).
        weight_decay: decoupled weight decay of the decayed variables.
        beta_1: Adam's first-moment decay (MAE uses 0.9).
        beta_2: Adam's second-moment decay (MAE uses 0.95).
        accum_steps: int >= 1; above 1, Keras' `gradient_accumulation_steps`:
            the gradients of that many steps are averaged into one update.

    Returns:
        A `keras.optimizers.AdamW`, not yet built.
    """
    if float(weight_decay) < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if isinstance(accum_steps, bool) or int(accum_steps) < 1:
        raise ValueError(f"accum_steps must be an integer >= 1, got {accum_steps!r}.")
    if not model.built:
        model.build()
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=float(weight_decay),
        beta_1=float(beta_1),
        beta_2=float(beta_2),
        gradient_accumulation_steps=int(accum_steps) if int(accum_steps) > 1 else None,
    )
    excluded = [v for v in model.trainable_variables if not is_decayed(v)]
    optimizer.exclude_from_weight_decay(var_list=excluded)
    return optimizer


def layer_decay_scales(model: keras.Model, layer_decay: float = 0.65) -> dict[str, float]:
    """`{variable path: lr scale}`: `layer_decay ** (num_layers + 1 - layer id)`."""
    if not 0 < float(layer_decay) <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
    from keras_ccmim.models.vit_classifier import layer_ids

    last = model.encoder.num_layers + 1
    return {path: float(layer_decay) ** (last - i) for path, i in layer_ids(model).items()}


@keras.saving.register_keras_serializable(package="keras_ccmim")
class LayerDecayAdamW(keras.optimizers.Adam):
    """AdamW whose learning rate (and decoupled weight decay) is scaled per
    variable, for layer-wise lr decay.

    Keras optimizers take one learning rate; this one multiplies it, in
    `update_step`, by `lr_scales[variable.path]` (1 for paths not listed).
    Weight decay `variable -= lr * scale * weight_decay * variable` is applied
    there too, before the Adam step (as torch's AdamW with per-group lr), and
    skipped for biases, norms, [CLS] and position embeddings
    (`is_decayed`).

    Args:
        learning_rate: float or schedule.
        lr_scales: dict from variable path to a float scale.
        weight_decay: decoupled weight decay.
        beta_1, beta_2, epsilon: Adam's.
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
        lr_scales: Mapping[str, float] | None = None,
        weight_decay: float = 0.05,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        **kwargs: Any,
    ):
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs
        )
        if float(weight_decay) < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
        self.lr_scales = {str(k): float(v) for k, v in (lr_scales or {}).items()}
        self.decoupled_weight_decay = float(weight_decay)

    def build(self, var_list: Sequence[keras.Variable]) -> None:
        if self.built:
            return
        super().build(var_list)
        self._variable_lr_scales = [self.lr_scales.get(v.path, 1.0) for v in var_list]
        self._variable_decayed = [is_decayed(v) for v in var_list]

    def update_step(
        self, gradient: Tensor, variable: keras.Variable, learning_rate: Tensor
    ) -> None:
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype) * self._variable_lr_scales[index]
        if self.decoupled_weight_decay and self._variable_decayed[index]:
            self.assign_sub(variable, variable * (learning_rate * self.decoupled_weight_decay))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("weight_decay", None)
        config.update(lr_scales=dict(self.lr_scales), weight_decay=self.decoupled_weight_decay)
        return config
