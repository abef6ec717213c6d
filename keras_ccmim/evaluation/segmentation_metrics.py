"""Semantic segmentation scores: mIoU, aAcc and mAcc (the paper's three).

The confusion matrix is accumulated by `keras.metrics.MeanIoU` (its
`total_cm`, rows the true class, columns the predicted one; pixels with
the ignore label are left out), one batch at a time into an int64 numpy
matrix, so counts stay exact past float32's 2**24 over a large split.
From the matrix, as mmsegmentation and Keras define them:

* IoU of a class: `TP / (TP + FP + FN)`; mIoU is its mean over the classes
  present in the labels or the predictions (Keras' MeanIoU skips the rest);
* aAcc: correctly labelled pixels over all scored pixels;
* mAcc: the mean over the classes present in the labels of `TP / (TP + FN)`.

All three are reported in percent.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_ccmim.data.segmentation_sources import IGNORE_LABEL
from keras_ccmim.type_aliases import Tensor


def scores_from_confusion(confusion: ArrayLike) -> dict[str, Any]:
    """`{"miou", "aacc", "macc", "per_class_iou", "num_pixels"}` (percent;
    a class absent from labels and predictions has IoU None) of a `[C, C]`
    confusion matrix (rows true, columns predicted)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positives = np.diag(confusion)
    per_label = confusion.sum(axis=1)
    union = per_label + confusion.sum(axis=0) - true_positives
    total = confusion.sum()
    if total == 0:
        raise ValueError("No pixel was scored: every label was the ignore label.")
    present = union > 0
    iou = np.where(present, true_positives / np.maximum(union, 1), np.nan)
    labelled = per_label > 0
    accuracy = true_positives[labelled] / per_label[labelled]
    return {
        "miou": float(100.0 * np.nanmean(iou)),
        "aacc": float(100.0 * true_positives.sum() / total),
        "macc": float(100.0 * accuracy.mean()),
        "per_class_iou": [None if np.isnan(v) else float(100.0 * v) for v in iou],
        "num_pixels": int(total),
    }


class SegmentationScores:
    """Accumulates the confusion matrix over batches (see the module
    docstring); `result()` gives `scores_from_confusion`.

    Args:
        num_classes: int >= 2.
        ignore_label: label value left out of the scores.
    """

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.metric = keras.metrics.MeanIoU(
            num_classes=self.num_classes, ignore_class=self.ignore_label,
            sparse_y_true=True, sparse_y_pred=True, name="segmentation_confusion",
        )
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(
        self, labels: Tensor, logits: Tensor | None = None, predictions: Tensor | None = None
    ) -> None:
        """Adds a batch: `labels [B, H, W]` and `logits [B, H, W, C]` (or
        the predicted classes `predictions [B, H, W]`)."""
        if predictions is None:
            predictions = ops.argmax(logits, axis=-1)
        labels, predictions = (
            np.asarray(x, np.int32) if isinstance(x, (np.ndarray, list)) else ops.cast(x, "int32")
            for x in (labels, predictions)
        )
        self.metric.reset_state()
        self.metric.update_state(labels, predictions)
        batch = np.rint(ops.convert_to_numpy(self.metric.total_cm)).astype(np.int64)
        self.confusion += batch

    def result(self) -> dict[str, Any]:
        return scores_from_confusion(self.confusion)


def evaluate_segmenter(
    model: keras.Model,
    dataset: Iterable[Any],
    num_classes: int,
    max_batches: int | None = None,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Scores of a segmenter over `(images, labels)` batches, and the
    first batch's predictions `(images, labels, predictions)` (numpy)."""
    scores = SegmentationScores(num_classes)
    first = None
    for index, (images, labels) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        images = np.asarray(images, dtype="float32")
        logits = model.predict_on_batch(images)
        predictions = ops.convert_to_numpy(ops.argmax(logits, axis=-1))
        labels = np.asarray(labels)
        scores.update(labels, predictions=predictions)
        if first is None:
            first = (images, labels, predictions)
    if first is None:
        raise ValueError("The evaluation dataset yielded no batch.")
    return scores.result(), first
