"""Linear probing: BatchNorm without affine + Dense on frozen features."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
from numpy.typing import ArrayLike

from keras_ccmim.evaluation.metrics import accuracies, check_labelled, infer_num_classes


@dataclasses.dataclass
class LinearProbeResult:
    """What `linear_probe` returns.

    Attributes:
        top1, top5: accuracy on the evaluation features, percent.
        train_top1: accuracy on the training features, percent.
        epochs, steps, learning_rate: what was run.
        model: the trained probe (`features [B, D]` -> logits `[B, C]`).
    """

    top1: float
    top5: float
    train_top1: float
    epochs: int
    steps: int
    learning_rate: float
    model: keras.Model = dataclasses.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}


def build_linear_probe(feature_dim: int, num_classes: int, seed: int | None = None) -> keras.Model:
    """`features [B, D]` -> `BatchNorm(affine=False, eps=1e-6)` -> `Dense(C)`.

    MAE's probe head: the BatchNorm (no scale, no offset) standardises the
    frozen features, so one learning rate suits any encoder.
    """
    if int(feature_dim) < 1 or int(num_classes) < 1:
        raise ValueError(
            f"feature_dim and num_classes must be >= 1, got {feature_dim} and {num_classes}."
        )
    inputs = keras.Input((int(feature_dim),), name="features")
    x = keras.layers.BatchNormalization(
        center=False, scale=False, epsilon=1e-6, momentum=0.9, name="feature_norm"
    )(inputs)
    logits = keras.layers.Dense(
        int(num_classes),
        kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.01, seed=seed),
        name="head",
    )(x)
    return keras.Model(inputs, logits, name="linear_probe")


def linear_probe(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    eval_features: ArrayLike,
    eval_labels: ArrayLike,
    num_classes: int | None = None,
    epochs: int = 90,
    batch_size: int = 256,
    base_learning_rate: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    warmup_epochs: float = 10,
    seed: int | None = 0,
    verbose: str | int = 0,
) -> LinearProbeResult:
    """Trains a linear probe on precomputed features and evaluates it.

    SGD with momentum (MAE uses LARS at ImageNet scale; SGD is fine at small
    scale), `lr = base_learning_rate * batch_size / 256`, linear warmup then
    cosine decay to 0.

    Args:
        train_features: `[M, D]`.
        train_labels: `[M]` ints.
        eval_features: `[Q, D]`.
        eval_labels: `[Q]` ints.
        num_classes: int; default `max(label) + 1` over both sets.
        epochs: passes over the training features.
        batch_size: int; capped at the number of training features.
        base_learning_rate: SGD's base learning rate (see above).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        warmup_epochs: linear warmup length (capped below `epochs`).
        seed: seeds initialisation and shuffling (sets Keras' global seed).
        verbose: `fit` verbosity.

    Returns:
        A `LinearProbeResult`.
    """
    if num_classes is None:
        num_classes = infer_num_classes(train_labels, eval_labels)
    train_features, train_labels = check_labelled(
        train_features, train_labels, num_classes, "train"
    )
    eval_features, eval_labels = check_labelled(eval_features, eval_labels, num_classes, "eval")
    if eval_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"train and eval features differ in width: {train_features.shape[1]} vs "
            f"{eval_features.shape[1]}."
        )
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if not float(base_learning_rate) > 0:
        raise ValueError(f"base_learning_rate must be positive, got {base_learning_rate}.")
    if train_features.shape[0] < 2:
        raise ValueError("A linear probe needs at least 2 training features (BatchNorm).")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))

    batch_size = min(int(batch_size), train_features.shape[0])
    steps_per_epoch = math.ceil(train_features.shape[0] / batch_size)
    total_steps = int(epochs) * steps_per_epoch
    warmup_steps = min(int(round(warmup_epochs * steps_per_epoch)), total_steps - 1)
    learning_rate = float(base_learning_rate) * batch_size / 256.0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    model = build_linear_probe(train_features.shape[1], num_classes, seed=seed)
    model.compile(
        optimizer=keras.optimizers.SGD(
            schedule, momentum=float(momentum), weight_decay=float(weight_decay) or None
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(
        train_features,
        train_labels,
        batch_size=batch_size,
        epochs=int(epochs),
        shuffle=True,
        verbose=verbose,
    )
    eval_scores = model.predict(eval_features, batch_size=1024, verbose=0)
    train_scores = model.predict(train_features, batch_size=1024, verbose=0)
    result = accuracies(eval_scores, eval_labels)
    return LinearProbeResult(
        top1=result["top1"],
        top5=result["top5"],
        train_top1=accuracies(train_scores, train_labels)["top1"],
        epochs=int(epochs),
        steps=total_steps,
        learning_rate=learning_rate,
        model=model,
    )
