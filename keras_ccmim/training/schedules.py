"""Learning-rate schedules."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_ccmim")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak_learning_rate`, then cosine decay to 0.

    `lr(step) = peak * step / warmup_steps` for `step < warmup_steps`, then
    `peak * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2`,
    and 0 from `total_steps` on. `step` is the optimizer's `iterations`, so
    restoring the optimizer restores the schedule's position.

    With gradient accumulation Keras calls the schedule with the count of
    training steps (micro-batches), not of updates, and the update that ends
    an accumulation reads it at that group's last step. With `accum_steps`
    the schedule reads it at the group's first step instead (`step` rounded
    down to a multiple of `accum_steps`): update `k` then gets the rate a
    run without accumulation gets at its update `k` when its steps are
    `accum_steps` times fewer, so accumulating `a` steps of batch `B` follows
    the schedule of batch `a * B` exactly.

    Args:
        peak_learning_rate: float > 0, the rate reached at the end of warmup.
        warmup_steps: int >= 0, in training steps.
        total_steps: int > warmup_steps, where the rate reaches 0.
        accum_steps: int >= 1, the optimizer's gradient accumulation steps.
    """

    def __init__(self, peak_learning_rate, warmup_steps, total_steps, accum_steps=1):
        super().__init__()
        if not float(peak_learning_rate) > 0:
            raise ValueError(
                f"peak_learning_rate must be positive, got {peak_learning_rate}."
            )
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
        if int(total_steps) <= int(warmup_steps):
            raise ValueError(
                f"total_steps ({total_steps}) must be larger than warmup_steps "
                f"({warmup_steps}). Train for more steps or shorten the warmup."
            )
        if int(accum_steps) < 1:
            raise ValueError(f"accum_steps must be >= 1, got {accum_steps}.")
        self.accum_steps = int(accum_steps)
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        if self.accum_steps > 1:
            step = ops.floor_divide(step, self.accum_steps) * self.accum_steps
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        decay = float(self.total_steps - self.warmup_steps)
        warmup_lr = self.peak_learning_rate * step / warmup
        progress = ops.clip((step - self.warmup_steps) / decay, 0.0, 1.0)
        cosine_lr = 0.5 * self.peak_learning_rate * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < self.warmup_steps, warmup_lr, cosine_lr)

    def get_config(self):
        return {
            "peak_learning_rate": self.peak_learning_rate,
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "accum_steps": self.accum_steps,
        }
