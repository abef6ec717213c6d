"""Learning-rate schedules: Keras' own, with the arguments checked, and the
one piece Keras lacks for gradient accumulation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from keras_ccmim.type_aliases import Tensor


def warmup_cosine(
    peak_learning_rate: float, warmup_steps: int, total_steps: int, accum_steps: int = 1
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup from 0 to `peak_learning_rate`, then cosine decay to 0.

    `lr(step) = peak * step / warmup_steps` for `step < warmup_steps`, then
    `peak * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2`,
    and 0 from `total_steps` on: Keras' `CosineDecay` with its warmup
    (`initial_learning_rate=0`, `warmup_target=peak`, `alpha=0`). `step` is
    the optimizer's `iterations`, so restoring the optimizer restores the
    schedule's position. With `accum_steps > 1` it is wrapped in
    `PerUpdate` (see there).

    Args:
        peak_learning_rate: float > 0, the rate reached at the end of warmup.
        warmup_steps: int >= 0, in training steps.
        total_steps: int > warmup_steps, where the rate reaches 0.
        accum_steps: int >= 1, the optimizer's gradient accumulation steps.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`, or a `PerUpdate` of one.
    """
    if not float(peak_learning_rate) > 0:
        raise ValueError(f"peak_learning_rate must be positive, got {peak_learning_rate}.")
    if int(warmup_steps) < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if int(total_steps) <= int(warmup_steps):
        raise ValueError(
            f"total_steps ({total_steps}) must be larger than warmup_steps "
            f"({warmup_steps}). Train for more steps or shorten the warmup."
        )
    if int(accum_steps) < 1:
        raise ValueError(f"accum_steps must be >= 1, got {accum_steps}.")
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=int(total_steps) - int(warmup_steps),
        alpha=0.0,
        warmup_target=float(peak_learning_rate),
        warmup_steps=int(warmup_steps),
    )
    return schedule if int(accum_steps) == 1 else PerUpdate(schedule, accum_steps)


@keras.saving.register_keras_serializable(package="keras_ccmim")
class PerUpdate(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule` read at the first training step of each optimizer update.

    Hand-written because Keras has no such piece: with gradient accumulation
    Keras calls the schedule with the count of training steps (micro-batches),
    and the update that ends an accumulation reads it at that group's last
    step. Rounding `step` down to a multiple of `accum_steps` gives update
    `k` the rate a run without accumulation, with `accum_steps` times fewer
    steps, gets at its update `k`: accumulating `a` steps of batch `B`
    follows the schedule of batch `a * B` exactly.
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, accum_steps: int):
        super().__init__()
        if int(accum_steps) < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}.")
        self.schedule = schedule
        self.accum_steps = int(accum_steps)

    def __call__(self, step: Tensor) -> Tensor:
        return self.schedule(ops.floor_divide(step, self.accum_steps) * self.accum_steps)

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "accum_steps": self.accum_steps}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PerUpdate:
        config = dict(config)
        config["schedule"] = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(**config)
