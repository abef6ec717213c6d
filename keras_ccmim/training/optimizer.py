"""AdamW as in MAE and ccMIM: no weight decay on biases, norms, tokens, positions."""

import keras

# Variables with these names are never decayed, whatever their rank.
NO_DECAY_NAMES = ("cls_token", "mask_token", "position_embedding")


def scaled_learning_rate(base_learning_rate, global_batch_size):
    """MAE's linear scaling rule: `lr = blr * global_batch / 256`."""
    if not float(base_learning_rate) > 0:
        raise ValueError(f"base_learning_rate must be positive, got {base_learning_rate}.")
    if int(global_batch_size) <= 0:
        raise ValueError(f"global_batch_size must be positive, got {global_batch_size}.")
    return float(base_learning_rate) * int(global_batch_size) / 256.0


def is_decayed(variable):
    """False for biases, norm scales/offsets and other vectors (`ndim <= 1`),
    and for variables named like `NO_DECAY_NAMES` ([CLS], mask token,
    position embeddings)."""
    if len(variable.shape) <= 1:
        return False
    path = getattr(variable, "path", variable.name)
    return not any(name in path for name in NO_DECAY_NAMES)


def make_optimizer(model, learning_rate, weight_decay=0.05, beta_1=0.9, beta_2=0.95):
    """AdamW over `model.trainable_variables`, decaying matrices only.

    Builds `model` first if needed (its variables decide what is excluded).

    Args:
        model: a built or buildable `keras.Model` (e.g. a `CCMIMPretrainer`).
        learning_rate: float or a `LearningRateSchedule` (see `WarmupCosine`).
        weight_decay: decoupled weight decay of the decayed variables.
        beta_1, beta_2: Adam moments (MAE uses 0.9, 0.95).

    Returns:
        A `keras.optimizers.AdamW`, not yet built.
    """
    if float(weight_decay) < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    if not model.built:
        model.build()
    optimizer = keras.optimizers.AdamW(
        learning_rate=learning_rate,
        weight_decay=float(weight_decay),
        beta_1=float(beta_1),
        beta_2=float(beta_2),
    )
    excluded = [v for v in model.trainable_variables if not is_decayed(v)]
    optimizer.exclude_from_weight_decay(var_list=excluded)
    return optimizer
