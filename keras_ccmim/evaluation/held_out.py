"""Which splits an evaluation reads: the dataset's `test` split, or, for a
dataset without one (an image folder, a TFDS dataset with only `train`), a
held-out slice of `train`.

    train[:80%]    the k-NN bank, the probe's or the fine-tuning's training
    train[80%:]    the evaluation

The two slices partition `train` (TFDS rounds percentages the same way on
both sides). `choose_splits` picks them for the splits a caller left unset,
says so in one log line, and checks that the named splits exist, all
before any image is read.
"""

from __future__ import annotations

import logging
import os

from keras_ccmim.data.sources import SYNTHETIC_OBJECTS, folder_path, is_folder
from keras_ccmim.data.splits import parse_split
from keras_ccmim.data.synthetic_objects import SYNTHETIC_OBJECTS_SPLIT_SEEDS
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

TEST_SPLIT = "test"
HELD_OUT_TRAIN_SPLIT = "train[:80%]"
HELD_OUT_EVAL_SPLIT = "train[80%:]"
# The built-in sources: `synthetic_objects` and its figure-ground labelling.
SYNTHETIC_DATASETS = (SYNTHETIC_OBJECTS, f"{SYNTHETIC_OBJECTS}_foreground")


def split_names(
    dataset: str, *, data_dir: PathLike | None = None, segmentation: bool = False
) -> tuple[str, ...]:
    """The names of the splits of `dataset` (before slicing), read without
    decoding an image.

    Args:
        dataset: a dataset name (see `keras_ccmim.data.sources`).
        data_dir: the folder of prepared TFDS datasets (TFDS names only).
        segmentation: `dataset` is a segmentation source: a folder of
            `images/` + `masks/` has a split `<name>` for each
            `<root>/<name>/images/`, besides `train` (`<root>/images/`);
            TFDS names are those of `keras_ccmim.data.segmentation_sources`.

    Returns:
        A sorted tuple of split names.

    Raises:
        ValueError: for a TFDS dataset that is not prepared under `data_dir`
            (or not a segmentation dataset, with `segmentation`).
    """
    if dataset in SYNTHETIC_DATASETS:
        return tuple(sorted(SYNTHETIC_OBJECTS_SPLIT_SEEDS))
    if is_folder(dataset):
        root = folder_path(dataset)
        names = {"train"}
        if segmentation and os.path.isdir(root):
            names.update(
                name for name in os.listdir(root)
                if os.path.isdir(os.path.join(root, name, "images"))
            )
        return tuple(sorted(names))
    from keras_ccmim.data.tfds_source import tfds_builder

    if segmentation:
        from keras_ccmim.data.segmentation_sources import tfds_segmentation_spec

        dataset = tfds_segmentation_spec(dataset)[0]
    return tuple(sorted(tfds_builder(dataset, data_dir).info.splits.keys()))


def _check_splits(dataset, splits, data_dir, segmentation):
    """`split_names(dataset)`, once each split of `splits` (`{argument:
    split or None}`) is found to name one of them."""
    names = split_names(dataset, data_dir=data_dir, segmentation=segmentation)
    for which, split in splits.items():
        if split is not None and parse_split(split)[0] not in names:
            raise ValueError(
                f"{which} {split!r}: {dataset!r} has no split {parse_split(split)[0]!r}; "
                f"its splits are {list(names)}. Slice one of them for a held-out set, "
                f"e.g. {HELD_OUT_TRAIN_SPLIT!r} and {HELD_OUT_EVAL_SPLIT!r} (the "
                f"default where there is no {TEST_SPLIT!r} split)."
            )
    return names


def choose_splits(
    dataset: str,
    train_split: str | None = None,
    eval_split: str | None = None,
    *,
    data_dir: PathLike | None = None,
    segmentation: bool = False,
) -> tuple[str, str]:
    """The `(train_split, eval_split)` an evaluation of `dataset` reads.

    An unset `eval_split` is `"test"` where the dataset has one, else
    `HELD_OUT_EVAL_SPLIT`; an unset `train_split` is then `"train"`, or
    `HELD_OUT_TRAIN_SPLIT` beside a held-out evaluation split. Holding out
    is logged in one line. Every split given must name one of the
    dataset's (`split_names`); this is checked here, before any image is
    read.

    Raises:
        ValueError: a split the dataset does not have, naming those it has
            and the held-out slices.
    """
    names = _check_splits(dataset, {"train_split": train_split, "eval_split": eval_split},
                          data_dir, segmentation)
    if eval_split is not None or TEST_SPLIT in names:
        return train_split or "train", eval_split or TEST_SPLIT
    train_split = train_split or HELD_OUT_TRAIN_SPLIT
    logger.info(
        f"{dataset} has no {TEST_SPLIT!r} split: evaluating on the held-out "
        f"{HELD_OUT_EVAL_SPLIT!r}, training on {train_split!r} (set the splits to choose "
        "others)."
    )
    return train_split, HELD_OUT_EVAL_SPLIT


def choose_eval_split(
    dataset: str,
    split: str | None = None,
    *,
    data_dir: PathLike | None = None,
    segmentation: bool = False,
) -> str:
    """The one split a look at held-out images of `dataset` reads: `split`
    (checked as in `choose_splits`), else `"test"`, else
    `HELD_OUT_EVAL_SPLIT` (logged in one line)."""
    names = _check_splits(dataset, {"split": split}, data_dir, segmentation)
    if split is not None or TEST_SPLIT in names:
        return split or TEST_SPLIT
    logger.info(
        f"{dataset} has no {TEST_SPLIT!r} split: reading the held-out "
        f"{HELD_OUT_EVAL_SPLIT!r} (set the split to choose another)."
    )
    return HELD_OUT_EVAL_SPLIT
