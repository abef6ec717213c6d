"""Learning-rate schedules: Keras' own, with the arguments checked."""

import keras


def warmup_cosine(peak_learning_rate, warmup_steps, total_steps):
    """Linear warmup from 0 to `peak_learning_rate`, then cosine decay to 0.

    `lr(step) = peak * step / warmup_steps` for `step < warmup_steps`, then
    `peak * (1 + cos(pi * (step - warmup_steps) / (total_steps - warmup_steps))) / 2`,
    and 0 from `total_steps` on: Keras' `CosineDecay` with its warmup
    (`initial_learning_rate=0`, `warmup_target=peak`, `alpha=0`). `step` is
    the optimizer's `iterations`, so restoring the optimizer restores the
    schedule's position.

    Args:
        peak_learning_rate: float > 0, the rate reached at the end of warmup.
        warmup_steps: int >= 0.
        total_steps: int > warmup_steps, where the rate reaches 0.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.
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
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=int(total_steps) - int(warmup_steps),
        alpha=0.0,
        warmup_target=float(peak_learning_rate),
        warmup_steps=int(warmup_steps),
    )
