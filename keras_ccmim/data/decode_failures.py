"""The count of undecodable TFDS records: what the input pipelines of this
process skipped (`skipped_records`), one warning with the count
(`report_skipped_records`) and the `fit` callback that gives it at the end
of training (`SkippedRecordsReport`). `decode_records` counts them."""

import logging
import threading

import keras

logger = logging.getLogger(__name__)

# Undecodable records the pipelines of this process have met, and how many
# of them a warning has given, by source (see `decode_records`).
_SKIPPED = {}
_REPORTED = {}
_SKIPPED_LOCK = threading.Lock()


def count_skipped(source, count):
    """Adds `count` undecodable records to `source`'s count."""
    with _SKIPPED_LOCK:
        _SKIPPED[source] = _SKIPPED.get(source, 0) + count


def skipped_records():
    """The undecodable TFDS records this process's input pipelines have met.

    Returns:
        dict `{source: count}`, where `source` names the dataset, the split
        and the use, e.g. `"TFDS dataset 'cifar10_jpeg' split 'train'
        (training)"`. Records are counted each time a pipeline reads them
        (each pass over the data), including those read ahead by prefetching.
    """
    with _SKIPPED_LOCK:
        return dict(_SKIPPED)


def report_skipped_records():
    """Logs one warning with the undecodable TFDS records skipped since the
    last report (of any source), if there were any.

    Returns:
        dict `{source: count}` of the records skipped since the last report
        (empty when none were, and nothing is logged).
    """
    with _SKIPPED_LOCK:
        new = {
            source: count - _REPORTED.get(source, 0)
            for source, count in _SKIPPED.items()
            if count > _REPORTED.get(source, 0)
        }
        for source in new:
            _REPORTED[source] = _SKIPPED[source]
    if new:
        logger.warning(
            "Skipped %d record(s) whose image failed to decode: %s. Each one's place in "
            "the stream was filled by a readable image next to it in the same pass, so "
            "batches stay full and positioned and the run goes on. The dataset's files "
            "hold damaged images: to read every image, prepare the dataset again from "
            "intact sources (`tfds build ...`).",
            sum(new.values()),
            "; ".join(f"{count} in {source}" for source, count in sorted(new.items())),
        )
    return new


class SkippedRecordsReport(keras.callbacks.Callback):
    """At the end of each `fit`, calls `report_skipped_records`: one warning
    with the undecodable TFDS records skipped since the last report, nothing
    when there were none."""

    def on_train_end(self, logs=None):
        report_skipped_records()
