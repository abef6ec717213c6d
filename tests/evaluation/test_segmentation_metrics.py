"""mIoU, aAcc and mAcc (keras.metrics' confusion matrix) against an
independent numpy computation, with the ignore label, on every backend."""

import numpy as np
import pytest

from keras_ccmim.evaluation.segmentation_metrics import (
    SegmentationScores,
    scores_from_confusion,
)

IGNORE = 255


def numpy_scores(labels, predictions, num_classes, ignore=IGNORE):
    """The reference: a bincount confusion matrix and mmsegmentation's
    per-class formulas, written without the library."""
    labels, predictions = np.ravel(labels), np.ravel(predictions)
    keep = labels != ignore
    labels, predictions = labels[keep], predictions[keep]
    confusion = np.bincount(labels * num_classes + predictions,
                            minlength=num_classes**2).reshape(num_classes, num_classes)
    ious, accs = [], []
    for c in range(num_classes):
        intersection = np.sum((labels == c) & (predictions == c))
        union = np.sum((labels == c) | (predictions == c))
        if union:
            ious.append(intersection / union)
        if np.sum(labels == c):
            accs.append(intersection / np.sum(labels == c))
    return confusion, {
        "miou": 100 * np.mean(ious),
        "aacc": 100 * np.mean(labels == predictions),
        "macc": 100 * np.mean(accs),
    }


@pytest.mark.parametrize("num_classes", [2, 5])
def test_scores_match_numpy_over_batches(num_classes):
    rng = np.random.default_rng(num_classes)
    scores = SegmentationScores(num_classes)
    all_labels, all_predictions = [], []
    for _ in range(3):
        labels = rng.integers(0, num_classes, size=(2, 7, 9))
        labels[rng.uniform(size=labels.shape) < 0.2] = IGNORE
        logits = rng.normal(size=(2, 7, 9, num_classes)).astype("float32")
        # Agree with the labels on about half the pixels, so scores are far from 0.
        agree = (rng.uniform(size=labels.shape) < 0.5) & (labels != IGNORE)
        logits[agree, labels[agree]] += 10.0
        scores.update(labels, logits)
        all_labels.append(labels)
        all_predictions.append(np.argmax(logits, axis=-1))
    confusion, expected = numpy_scores(np.stack(all_labels), np.stack(all_predictions),
                                       num_classes)
    np.testing.assert_array_equal(scores.confusion, confusion)
    result = scores.result()
    for name in ("miou", "aacc", "macc"):
        assert result[name] == pytest.approx(expected[name], abs=1e-9), name
    assert result["num_pixels"] == int(np.sum(np.stack(all_labels) != IGNORE))


def test_absent_classes_are_left_out_of_the_means():
    # Class 2 appears nowhere; class 1 is predicted but never labelled.
    labels = np.array([[0, 0, 0, 3]])
    predictions = np.array([[0, 1, 0, 3]])
    scores = SegmentationScores(4)
    scores.update(labels, predictions=predictions)
    result = scores.result()
    _, expected = numpy_scores(labels, predictions, 4)
    assert result["per_class_iou"][2] is None
    assert result["miou"] == pytest.approx(expected["miou"]) == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert result["macc"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert result["aacc"] == pytest.approx(75.0)


def test_only_ignored_pixels_is_an_error():
    scores = SegmentationScores(3)
    scores.update(np.full((1, 2, 2), IGNORE), predictions=np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match="ignore label"):
        scores.result()
    with pytest.raises(ValueError, match="ignore label"):
        scores_from_confusion(np.zeros((3, 3)))
