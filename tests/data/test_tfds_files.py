"""The record files of a healthy TFDS split are read as `as_dataset` reads
them: the same examples in the same order, whatever the files, the slice,
the interleaving and the file shuffling."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data.tfds_files import read_record_files

from tests.data.tfds_testing import SPLIT, jpeg_records, write_tfds

NUM_RECORDS = 70


@pytest.fixture(scope="module")
def builders(tmp_path_factory):
    """Builders of the same records in 3 files, written in order (read one
    file at a time) and shuffled (read 16 files at a time, in blocks)."""
    import tensorflow_datasets as tfds

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    records = jpeg_records(NUM_RECORDS, ())
    ordered = write_tfds(data_dir, "ordered_images", records, num_shards=3)
    shuffled = write_tfds(
        data_dir, "shuffled_images", records, num_shards=3, disable_shuffling=False
    )
    return [tfds.builder(name, data_dir=data_dir) for name in (ordered, shuffled)]


def _to_example(example):
    return {"image": example["image"], "label": tf.cast(example["label"], tf.int32)}


def _examples(dataset):
    return [(e["image"], int(e["label"])) for e in dataset.as_numpy_iterator()]


@pytest.mark.parametrize("split", [SPLIT, f"{SPLIT}[5:50]", f"{SPLIT}[30:]"])
@pytest.mark.parametrize("shuffle_files", [False, True])
def test_as_tfds_reads_them(builders, split, shuffle_files):
    import tensorflow_datasets as tfds

    decoders = {"image": tfds.decode.SkipDecoding()}
    for builder in builders:
        assert len(builder.info.splits[SPLIT].file_instructions) == 3
        if shuffle_files and builder.info.disable_shuffling:
            continue  # TFDS refuses to shuffle the files of an ordered dataset
        expected = builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders=decoders,
            read_config=tfds.ReadConfig(shuffle_seed=7, try_autocache=False),
        ).map(_to_example)
        ours = read_record_files(
            builder, split, _to_example, decoders=decoders, shuffle_files=shuffle_files, seed=7
        )
        for _ in range(2):  # a new file order each pass, when shuffled
            got, want = _examples(ours), _examples(expected)
            assert len(got) == builder.info.splits[split].num_examples
            assert got == want
    labels = [label for _, label in _examples(read_record_files(
        builders[1], SPLIT, _to_example, decoders=decoders))]
    assert labels != sorted(labels)  # the shuffled files are read interleaved
    np.testing.assert_array_equal(sorted(labels), np.arange(NUM_RECORDS))
