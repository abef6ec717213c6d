"""Scoring a classifier on the evaluation split, at each epoch end of a
fine-tuning run, and the per-epoch history those scores make."""


import keras
import numpy as np
from keras import ops

from keras_ccmim.evaluation.metrics import accuracies
from keras_ccmim.file_io import append_json_line


def evaluate_classifier(model, dataset, max_batches=None):
    """Top-1/top-5 (percent) and `num_eval` of a classifier over
    `(images, extras)` batches."""
    scores, labels = [], []
    for index, (images, extras) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        logits = model.predict_on_batch(np.asarray(images, dtype="float32"))
        scores.append(ops.convert_to_numpy(logits))
        labels.append(np.asarray(extras["label"]).reshape(-1))
    if not scores:
        raise ValueError("The evaluation dataset yielded no batch.")
    labels = np.concatenate(labels)
    if labels.min() < 0:
        raise ValueError("The evaluation split is unlabelled (label -1).")
    result = accuracies(np.concatenate(scores), labels)
    result["num_eval"] = int(labels.shape[0])
    return result


def _float_or_none(value):
    if value is None:
        return None
    return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))


class EpochValidation(keras.callbacks.Callback):
    """Evaluates the classifier on the evaluation batches at each epoch end.

    Adds `val_top1` and `val_top5` (percent) to the epoch `logs`, keeps one
    record per epoch in `records` (`epoch`, 1-based, `global_step`, `loss`,
    `val_top1`, `val_top5`) and, with `history_path`, appends it there as a
    JSON line. It acts at epoch ends only (no `on_train_batch_*`), so it
    adds no host sync to the training steps. Put it before the callbacks
    that write `logs` and before `TrainingCheckpoint` (`fit_resumable` puts
    its `callbacks` there), so a checkpoint at an epoch end comes after the
    epoch's record.

    Args:
        dataset: the evaluation batches `(images, extras)` (re-read each
            epoch).
        history_path: optional JSON-lines file to append the records to.
    """

    def __init__(self, dataset, history_path=None):
        super().__init__()
        self.dataset = dataset
        self.history_path = history_path
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        result = evaluate_classifier(self.model, self.dataset)
        record = {
            "epoch": int(epoch) + 1,
            "global_step": int(ops.convert_to_numpy(self.model.optimizer.iterations)),
            "loss": _float_or_none((logs or {}).get("loss")),
            "val_top1": float(result["top1"]),
            "val_top5": float(result["top5"]),
        }
        if logs is not None:
            logs.update(val_top1=record["val_top1"], val_top5=record["val_top5"])
        self.records.append(record)
        if self.history_path:
            append_json_line(self.history_path, record)



HISTORY_KEYS = ("epoch", "loss", "val_top1", "val_top5")


def history_lists(records, last_epoch):
    """Per-epoch lists of `HISTORY_KEYS` over epochs 1..`last_epoch`."""
    epochs = sorted(e for e in records if 1 <= e <= last_epoch)
    return {key: [records[e].get(key) for e in epochs] for key in HISTORY_KEYS}


def best_epoch(history):
    """`(epoch, top1, top5)` of the highest `val_top1` in `history` (the
    first of equals), or `(None, None, None)` for an empty history."""
    top1 = history.get("val_top1") or []
    if not top1:
        return None, None, None
    index = int(np.argmax(np.asarray(top1, dtype="float64")))
    return history["epoch"][index], top1[index], history["val_top5"][index]

