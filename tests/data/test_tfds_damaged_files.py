"""A TFDS file with a damaged record (a failed checksum) loses the records
after it: one warning names the file and the count, the pipeline goes on
with the rest, filling their places as for undecodable images, and counts
each kind right; with nothing readable left it stops with one line."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import make_dataset
from keras_ccmim.data.decode_failures import (
    describe_data_error,
    lost_records,
    report_skipped_records,
    skipped_records,
)

from tests.data.tfds_testing import (
    SPLIT,
    flip_bytes,
    jpeg_records,
    record_files,
    record_offsets,
    write_tfds,
)

NUM_RECORDS = 24  # two files of 12
DAMAGED_RECORD = 7  # of the first file: records 7 to 11 are lost
LOST = tuple(range(DAMAGED_RECORD, 12))
BROKEN = 20  # an undecodable JPEG in the second file
# Evaluation reads the files in order, each record in its place: the lost
# records' places are filled by the next readable record (12), as is the
# undecodable one's (by 21).
READABLE = [i for i in range(NUM_RECORDS) if i not in LOST + (BROKEN,)]
FILLED_BY = list(range(7)) + [12] * 5 + list(range(12, 20)) + [21, 21, 22, 23]


@pytest.fixture(scope="module")
def damaged_dir(tmp_path_factory):
    """`(data_dir, name, damaged file)`: 50 bytes of record 7 of the first
    file flipped."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    name = write_tfds(
        data_dir, "damaged_file_images", jpeg_records(NUM_RECORDS, (BROKEN,)), num_shards=2
    )
    first, second = record_files(data_dir, name)
    assert [len(record_offsets(path)) for path in (first, second)] == [12, 12]
    start, length = record_offsets(first)[DAMAGED_RECORD]
    assert length > 100
    flip_bytes(first, start + 12 + 40, 50)  # inside the record's data
    return data_dir, name, first


def _source(name, use):
    return f"TFDS dataset {name!r} split {SPLIT!r} ({use})"


def _since(before, now, source):
    return now.get(source, 0) - before.get(source, 0)


def _messages(caplog):
    return [
        r.getMessage() for r in caplog.records
        if r.name == "keras_ccmim.data.decode_failures" and r.levelname == "WARNING"
    ]


def test_evaluation_names_the_file_and_counts_each_kind(damaged_dir, caplog):
    data_dir, name, damaged = damaged_dir
    report_skipped_records()
    skipped, lost = skipped_records(), lost_records()
    ds = make_dataset(
        name, split=SPLIT, data_dir=data_dir, batch_size=4, image_size=8, training=False
    )
    with caplog.at_level(logging.WARNING):
        batches = list(ds.as_numpy_iterator())
    assert [images.shape for images, _ in batches] == [(4, 8, 8, 3)] * 6
    labels = np.concatenate([extras["label"] for _, extras in batches])
    np.testing.assert_array_equal(labels, FILLED_BY)
    source = _source(name, "evaluation")
    assert _since(skipped, skipped_records(), source) == 1
    assert _since(lost, lost_records(), source) == len(LOST)
    damaged_line, skipped_line = _messages(caplog)
    assert f"TFDS file {damaged} is damaged" in damaged_line
    assert f"{len(LOST)} of the 12 record(s) of {source}" in damaged_line
    assert "\n" not in damaged_line
    assert skipped_line.startswith(
        f"Skipped 1 record(s) whose image failed to decode: 1 in {source}"
    )

    # The file is named once a process; each pass counts its records.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        again = np.concatenate([e["label"] for _, e in ds.as_numpy_iterator()])
    np.testing.assert_array_equal(again, FILLED_BY)
    assert _since(lost, lost_records(), source) == 2 * len(LOST)
    assert [m for m in _messages(caplog) if "is damaged" in m] == []


def test_training_goes_on_and_resumes_exactly(damaged_dir):
    data_dir, name, _ = damaged_dir
    before = lost_records()

    def stream(start_batch, batches):
        ds = make_dataset(
            name, split=SPLIT, data_dir=data_dir, batch_size=4, image_size=8, seed=2,
            shuffle_buffer=10, repeat=True, start_batch=start_batch,
        )
        return list(ds.take(batches).as_numpy_iterator())

    from_start = stream(0, 12)  # two passes
    for first in range(0, 12, 6):
        labels = np.concatenate([e["label"] for _, e in from_start[first : first + 6]])
        assert len(labels) == NUM_RECORDS
        assert set(labels.tolist()) <= set(READABLE) and len(set(labels.tolist())) > 12
    assert _since(before, lost_records(), _source(name, "training")) >= 2 * len(LOST)
    # A stream resumed in front of the lost records' places (at the end of the
    # pass, after the shuffle's last window) is the tail of the whole one.
    for start in (3, 4):
        for (images, extras), (expected, expected_extras) in zip(
            stream(start, 12 - start), from_start[start:]
        ):
            np.testing.assert_array_equal(images, expected)
            np.testing.assert_array_equal(extras["label"], expected_extras["label"])


def test_nothing_readable_stops_with_one_line(tmp_path):
    name = write_tfds(str(tmp_path), "all_lost_images", jpeg_records(3, ()))
    (path,) = record_files(str(tmp_path), name)
    start, _ = record_offsets(path)[0]
    flip_bytes(path, start + 20, 50)
    for training in (False, True):
        ds = make_dataset(
            name, split=SPLIT, data_dir=str(tmp_path), batch_size=1, image_size=8,
            training=training,
        )
        with pytest.raises(tf.errors.InvalidArgumentError) as error:
            list(ds.as_numpy_iterator())
        line = describe_data_error(error.value)
        use = "training" if training else "evaluation"
        assert line.startswith(f"No record of {_source(name, use)} could be decoded or read")
        assert f"3 are lost in damaged files ({path}) and 0 failed" in line
        assert "\n" not in line and "Traceback" not in line
    assert describe_data_error(ValueError("another error")) is None
