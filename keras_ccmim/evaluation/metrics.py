"""Top-k accuracy of class scores, and checks of labelled feature sets."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def top_k_accuracy(scores: ArrayLike, labels: ArrayLike, k: int) -> float:
    """Fraction of rows whose label is among the `k` highest scores.

    Ties are broken towards the lower class index (a stable sort), so the
    result is deterministic. `k` larger than the number of classes counts
    every row as correct.

    Args:
        scores: `[M, C]` class scores.
        labels: `[M]` int labels in `[0, C)`.
        k: int >= 1.

    Returns:
        float in [0, 1].
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"scores must be [M, C] and labels [M]; got {scores.shape} and {labels.shape}."
        )
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    k = min(int(k), scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(order == labels[:, None], axis=1)))


def accuracies(scores: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """`{"top1": ..., "top5": ...}` in percent (top-5 over `min(5, C)` classes)."""
    return {
        "top1": 100.0 * top_k_accuracy(scores, labels, 1),
        "top5": 100.0 * top_k_accuracy(scores, labels, 5),
    }


def check_labelled(
    features: ArrayLike, labels: ArrayLike, num_classes: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validates a `[M, D]` feature matrix and its `[M]` labels in `[0, C)`.

    Returns:
        `(features float32, labels int64)` as numpy arrays.
    """
    features = np.asarray(features, dtype="float32")
    labels = np.asarray(labels)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"{what} features must be a non-empty [M, D] array, got {features.shape}.")
    if labels.shape != (features.shape[0],):
        raise ValueError(
            f"{what} labels must have shape [{features.shape[0]}] to match the features, "
            f"got {labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what} labels must be integers, got dtype {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{what} labels must lie in [0, {num_classes}), got range "
            f"[{labels.min()}, {labels.max()}]. Unlabelled data (label -1) cannot be "
            "used for k-NN, linear probing or fine-tuning."
        )
    if not np.all(np.isfinite(features)):
        raise ValueError(f"{what} features contain NaN or infinite values.")
    return features, labels.astype("int64")


def infer_num_classes(*label_arrays: ArrayLike) -> int:
    """`max(label) + 1` over the given label arrays."""
    largest = max(int(np.max(labels)) for labels in label_arrays if np.size(labels))
    if largest < 0:
        raise ValueError("The labels are all -1 (unlabelled data): nothing to classify.")
    return largest + 1
