"""The splits an evaluation reads: `test` where the dataset has one, else a
held-out slice of `train` (said in one line), and a named split the dataset
lacks refused before any image is read."""

import logging

import pytest

from keras_ccmim.data import describe_dataset, split_bounds
from keras_ccmim.evaluation.held_out import (
    HELD_OUT_EVAL_SPLIT,
    HELD_OUT_TRAIN_SPLIT,
    choose_eval_split,
    choose_splits,
    split_names,
)
from tests.data.image_folder_testing import write_class_folder

HELD_OUT_LINE = "has no 'test' split: evaluating on the held-out 'train[80%:]'"


def _held_out_lines(caplog):
    return [r.getMessage() for r in caplog.records if "has no 'test' split" in r.getMessage()]


def test_a_dataset_with_a_test_split_keeps_it(caplog):
    caplog.set_level(logging.INFO, logger="keras_ccmim")
    assert split_names("synthetic_objects") == ("test", "train")
    assert choose_splits("synthetic_objects") == ("train", "test")
    assert choose_splits("synthetic_objects", "train[:50%]", "train[50%:]") == (
        "train[:50%]", "train[50%:]")
    assert choose_eval_split("synthetic_objects_foreground", segmentation=True) == "test"
    assert _held_out_lines(caplog) == []


def test_a_folder_holds_out_a_slice_of_train(tmp_path, caplog):
    folder = f"folder:{write_class_folder(tmp_path / 'images')}"
    caplog.set_level(logging.INFO, logger="keras_ccmim")
    assert split_names(folder) == ("train",)
    assert choose_splits(folder) == (HELD_OUT_TRAIN_SPLIT, HELD_OUT_EVAL_SPLIT)
    (line,) = _held_out_lines(caplog)
    assert line == (f"{folder} {HELD_OUT_LINE}, training on 'train[:80%]' (set the splits "
                    "to choose others).")
    # A training split given is kept beside the held-out evaluation split.
    assert choose_splits(folder, train_split="train[:50%]") == ("train[:50%]", "train[80%:]")
    # An evaluation split given is the user's choice: no held-out default.
    caplog.clear()
    assert choose_splits(folder, eval_split="train[90%:]") == ("train", "train[90%:]")
    assert choose_eval_split(folder, "train[:3]") == "train[:3]"
    assert _held_out_lines(caplog) == []
    assert choose_eval_split(folder) == HELD_OUT_EVAL_SPLIT
    assert _held_out_lines(caplog) == [
        f"{folder} has no 'test' split: reading the held-out 'train[80%:]' (set the split "
        "to choose another)."]
    # The two slices split the 12 readable images without overlap.
    train = describe_dataset(folder, split=HELD_OUT_TRAIN_SPLIT).num_images
    held_out = describe_dataset(folder, split=HELD_OUT_EVAL_SPLIT).num_images
    assert (train, held_out) == (10, 2)
    for size in (1, 2, 5, 12, 1001):
        _, start, stop = split_bounds(HELD_OUT_TRAIN_SPLIT, size)
        _, held_start, held_stop = split_bounds(HELD_OUT_EVAL_SPLIT, size)
        assert (start, stop, held_start, held_stop) == (0, stop, stop, size)


@pytest.mark.parametrize("which", ["train_split", "eval_split"])
def test_a_split_the_dataset_lacks_is_refused_by_name(tmp_path, which):
    folder = f"folder:{tmp_path}"
    with pytest.raises(ValueError) as error:
        choose_splits(folder, **{which: "test[:10]"})
    assert str(error.value) == (
        f"{which} 'test[:10]': '{folder}' has no split 'test'; its splits are ['train']. "
        "Slice one of them for a held-out set, e.g. 'train[:80%]' and 'train[80%:]' (the "
        "default where there is no 'test' split).")
    with pytest.raises(ValueError, match=r"^split 'validation': 'synthetic_objects' has no "
                       r"split 'validation'; its splits are \['test', 'train'\]\."):
        choose_eval_split("synthetic_objects", "validation")


def test_a_segmentation_folder_has_the_splits_of_its_subfolders(tmp_path):
    (tmp_path / "flat" / "images").mkdir(parents=True)
    assert split_names(f"folder:{tmp_path / 'flat'}", segmentation=True) == ("train",)
    assert choose_splits(f"folder:{tmp_path / 'flat'}", segmentation=True) == (
        HELD_OUT_TRAIN_SPLIT, HELD_OUT_EVAL_SPLIT)
    for name in ("train", "test", "notes"):
        (tmp_path / "split" / name).mkdir(parents=True)
    for name in ("train", "test"):
        (tmp_path / "split" / name / "images").mkdir()
    assert split_names(f"folder:{tmp_path / 'split'}", segmentation=True) == ("test", "train")
    assert choose_splits(f"folder:{tmp_path / 'split'}", segmentation=True) == (
        "train", "test")
