"""Weighted k-NN classification of frozen features (DINO / MAE practice)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from keras_ccmim.evaluation.metrics import accuracies, check_labelled, infer_num_classes


def _l2_normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_scores(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    query_features: ArrayLike,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> np.ndarray:
    """Class scores of weighted k-NN with cosine similarity.

    Each query takes its `k` most similar training features (cosine
    similarity `s`); neighbour `j` votes for its class with weight
    `exp(s_j / temperature)`. A class's score is the sum of its votes.

    Args:
        train_features: `[M, D]`.
        train_labels: `[M]` ints in `[0, num_classes)`.
        query_features: `[Q, D]`.
        num_classes: int `C`.
        k: neighbours, `1 <= k <= M`.
        temperature: `T > 0` of the vote weights.
        batch_size: queries per similarity matrix (memory `batch_size * M`).

    Returns:
        `[Q, C]` float64 scores.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    train_features, train_labels = check_labelled(
        train_features, train_labels, num_classes, "train"
    )
    query_features = np.asarray(query_features, dtype="float32")
    if query_features.ndim != 2 or query_features.shape[1] != train_features.shape[1]:
        raise ValueError(
            f"query features must be [Q, {train_features.shape[1]}] like the train "
            f"features, got {query_features.shape}."
        )
    if not 1 <= int(k) <= train_features.shape[0]:
        raise ValueError(
            f"k must be between 1 and the number of train features "
            f"({train_features.shape[0]}), got {k}."
        )
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    k, batch_size = int(k), int(batch_size)
    train = _l2_normalize(train_features.astype("float64"))
    queries = _l2_normalize(query_features.astype("float64"))
    scores = np.zeros((queries.shape[0], num_classes), dtype="float64")
    for start in range(0, queries.shape[0], batch_size):
        similarity = queries[start : start + batch_size] @ train.T
        neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1) / temperature)
        votes = train_labels[neighbours]
        rows = np.arange(similarity.shape[0])[:, None]
        np.add.at(scores[start : start + batch_size], (rows, votes), weights)
    return scores


def knn_classify(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    eval_features: ArrayLike,
    eval_labels: ArrayLike,
    num_classes: int | None = None,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Weighted k-NN accuracy (cosine, `k=20`, `T=0.07` by default).

    Args:
        train_features: the memory bank's features, `[M, D]`.
        train_labels: the memory bank's labels, `[M]`.
        eval_features: the queries' features, `[Q, D]`.
        eval_labels: the queries' labels, `[Q]`.
        num_classes: int; default `max(label) + 1` over both sets.
        k: neighbours (see `knn_scores`).
        temperature: temperature of the vote weights (see `knn_scores`).
        batch_size: queries scored at once (see `knn_scores`).

    Returns:
        dict: `top1`, `top5` (percent), `k`, `temperature`, `num_train`,
        `num_eval`, `num_classes`.
    """
    if num_classes is None:
        num_classes = infer_num_classes(train_labels, eval_labels)
    eval_features, eval_labels = check_labelled(eval_features, eval_labels, num_classes, "eval")
    scores = knn_scores(
        train_features, train_labels, eval_features, num_classes, k, temperature, batch_size
    )
    result = accuracies(scores, eval_labels)
    result.update(
        k=int(k),
        temperature=float(temperature),
        num_train=int(np.shape(train_features)[0]),
        num_eval=int(eval_features.shape[0]),
        num_classes=int(num_classes),
    )
    return result
