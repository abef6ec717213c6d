"""The count of TFDS records a pipeline could not use, and what it says of
them. `decode_records` counts them.

Undecodable records: what the input pipelines of this process skipped
(`skipped_records`), one warning with the count (`report_skipped_records`)
and the `fit` callback that gives it at the end of training
(`SkippedRecordsReport`).

Records lost in a damaged file: TensorFlow's reader stops reading a file at
its first record that fails its checksum (or is cut short), so the records
of the split from there to the end of that file cannot be read.
`keras_ccmim.data.tfds_files` puts an element labelled `LOST_RECORD` in the
place of each (its image: `lost_record_text`). At the end of a pass that met
them, `report_damaged_file` names each damaged file and how many records it
lost, in one warning line, once a process; `lost_records` counts them. A
pass in which nothing is readable raises `NoReadableRecordError`, one line
that `describe_data_error` finds in the error `fit` raises.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

# The label of the element that stands in for a record lost in a damaged
# file (real labels are >= -1).
LOST_RECORD = -2

# Undecodable records the pipelines of this process have met, and how many
# of them a warning has given, by source (see `decode_records`).
_SKIPPED = {}
_REPORTED = {}
# Records lost in damaged files, by source, and the paths of the files
# already named.
_LOST = {}
_DAMAGED = set()
_SKIPPED_LOCK = threading.Lock()


class NoReadableRecordError(ValueError):
    """A pass over a TFDS split found no record it could read and decode."""


def lost_record_text(path, records, index):
    """The image text (tf.string) of the stand-in for the `index`-th record
    (from 0) lost in file `path` (tf.string), which holds `records` records
    of the split (`records`, `index`: int64 tensors)."""
    numbers = [tf.strings.as_string(records), tf.strings.as_string(index)]
    return tf.strings.join([path, *numbers], separator="\t")


def parse_lost_record_text(text):
    """`(path, records, index)` of a `lost_record_text` (bytes)."""
    path, records, index = text.decode("utf-8", "replace").rsplit("\t", 2)
    return path, int(records), int(index)


def report_damaged_file(path, lost, records, source):
    """Logs one warning line naming a damaged file and the records of the
    split it lost, unless this process has named the file already.

    Args:
        path: str, the file.
        lost: int, the records of the split lost in it (one pass).
        records: int, the records of the split it holds.
        source: str, the split the pipeline reads (see `decode_records`).
    """
    with _SKIPPED_LOCK:
        if path in _DAMAGED:
            return
        _DAMAGED.add(path)
    logger.warning(
        "TFDS file %s is damaged (a record failed its checksum or the file is cut short; "
        "the reader stops there): %d of the %d record(s) of %s in it cannot be read. They "
        "are skipped, each one's place filled by a readable record, and the run goes on "
        "with the rest. To read every record, restore the file from an intact copy or "
        "prepare the dataset again (`tfds build ...`).",
        path, lost, records, source,
    )


def count_lost(source: str, count: int) -> None:
    """Adds `count` records lost in damaged files to `source`'s count."""
    with _SKIPPED_LOCK:
        _LOST[source] = _LOST.get(source, 0) + count


def lost_records() -> dict[str, int]:
    """The TFDS records lost in damaged files that this process's input
    pipelines have met.

    Returns:
        dict `{source: count}` (see `skipped_records`), counted each time
        a pipeline reads past them (each pass over the data).
    """
    with _SKIPPED_LOCK:
        return dict(_LOST)


def describe_data_error(error: BaseException) -> str | None:
    """The one line of a `NoReadableRecordError` inside `error` (the
    `tf.errors.OpError` an input pipeline raises through `fit` or an
    iterator), or None for any other error."""
    text = getattr(error, "message", None) or str(error)
    marker = f"{NoReadableRecordError.__name__}: "
    if marker not in text:
        return None
    return text.split(marker, 1)[1].splitlines()[0]


def count_skipped(source: str, count: int) -> None:
    """Adds `count` undecodable records to `source`'s count."""
    with _SKIPPED_LOCK:
        _SKIPPED[source] = _SKIPPED.get(source, 0) + count


def skipped_records() -> dict[str, int]:
    """The undecodable TFDS records this process's input pipelines have met.

    Returns:
        dict `{source: count}`, where `source` names the dataset, the split
        and the use, e.g. `"TFDS dataset 'cifar10_jpeg' split 'train'
        (training)"`. Records are counted each time a pipeline reads them
        (each pass over the data), including those read ahead by prefetching.
    """
    with _SKIPPED_LOCK:
        return dict(_SKIPPED)


def report_skipped_records() -> dict[str, int]:
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

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        report_skipped_records()
