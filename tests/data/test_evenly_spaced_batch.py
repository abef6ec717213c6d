"""`evenly_spaced_batch`: the examples at the centres of equal parts of a
split, as the evaluation pipeline gives them, read without the rest."""

import numpy as np
import pytest

from keras_ccmim.data import evenly_spaced_batch, make_dataset
from tests.data.image_folder_testing import write_class_folder
from tests.data.tfds_testing import SPLIT, jpeg_records, write_tfds


def _evaluation_examples(name, **kwargs):
    """Every example of the split in evaluation order (the reference)."""
    batches = list(make_dataset(name, batch_size=1, training=False, **kwargs).as_numpy_iterator())
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([e["label"] for _, e in batches])
    return images, labels


def test_a_class_sorted_folder_is_pictured_across_its_classes(tmp_path):
    # Files listed class by class: 6 of each, the broken one skipped.
    folder = write_class_folder(tmp_path / "images", classes=("a", "b", "c", "d"))
    name = f"folder:{folder}"
    images, extras = evenly_spaced_batch(name, count=4, image_size=8)
    all_images, all_labels = _evaluation_examples(name, image_size=8)
    assert list(all_labels[:6]) == [0] * 6  # the first images: one class
    positions = [3, 9, 15, 21]  # (2i + 1) * 24 // 8
    assert list(extras["label"].numpy()) == [0, 1, 2, 3]
    np.testing.assert_array_equal(images.numpy(), all_images[positions])
    # A count beyond the split gives each image once.
    images, extras = evenly_spaced_batch(name, split="train[:5]", count=9, image_size=8)
    _, sliced = _evaluation_examples(name, split="train[:5]", image_size=8)
    assert list(extras["label"].numpy()) == list(sliced)


def test_synthetic_objects_slice_and_extras():
    kwargs = dict(split="train[10:50]", image_size=16, num_images=100)
    images, extras = evenly_spaced_batch("synthetic_objects", count=5, **kwargs)
    positions = [4, 12, 20, 28, 36]  # (2i + 1) * 40 // 10
    reference = list(
        make_dataset("synthetic_objects", batch_size=40, training=False, **kwargs)
        .as_numpy_iterator())[0]
    np.testing.assert_array_equal(images.numpy(), reference[0][positions])
    for key in ("label", "foreground"):
        np.testing.assert_array_equal(extras[key].numpy(), reference[1][key][positions])


def test_tfds_reads_one_record_slices_and_leaves_out_a_broken_one(tmp_path):
    data_dir = str(tmp_path)
    # Each record labelled with its index; record 8 does not decode.
    name = write_tfds(data_dir, "spread_images", jpeg_records(20, broken=(8,)), num_shards=2)
    images, extras = evenly_spaced_batch(
        name, split=f"{SPLIT}[4:16]", count=4, image_size=8, data_dir=data_dir)
    # Positions 1, 4, 7, 10 of the slice: records 5, 8 (broken), 11, 14.
    assert list(extras["label"].numpy()) == [5, 11, 14]
    all_images, _ = _evaluation_examples(
        name, split=f"{SPLIT}[4:16]", image_size=8, data_dir=data_dir)
    np.testing.assert_array_equal(images.numpy(), all_images[[1, 7, 10]])
    _, extras = evenly_spaced_batch(
        name, split=f"{SPLIT}[:25%]", count=2, image_size=8, data_dir=data_dir, num_images=4)
    assert list(extras["label"].numpy()) == [1, 3]  # 4 of the slice's 5 records


@pytest.mark.parametrize("count", [0, -1, 2.5, True])
def test_bad_count(count):
    with pytest.raises(ValueError, match="count must be a positive integer"):
        evenly_spaced_batch("synthetic_objects", count=count, image_size=8)
