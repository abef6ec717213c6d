"""Images from a folder as a dataset: `load_image_folder`, `describe_image_folder`.

The folder's readable images and labels come from its scan
(`keras_ccmim.data.image_folder_scan`); a split (`"train"`, optionally
sliced) selects a fixed random part of them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.image_folder_scan import scan_image_folder
from keras_ccmim.data.image_header import DEFAULT_MAX_PIXELS
from keras_ccmim.data.splits import split_bounds
from keras_ccmim.type_aliases import PathLike

# Fixed seed of the permutation applied before slicing, so that
# "train[:90%]" and "train[90%:]" are disjoint random halves in every run.
_SLICE_PERMUTATION_SEED = 0


def _slice(folder, split):
    """Indices of `folder.files` selected by `split`."""
    base, start, stop = split_bounds(split, len(folder.files))
    if base != "train":
        raise ValueError(
            f"Invalid split {split!r} for an image folder: a folder has one "
            "split, 'train'. Hold out a slice with e.g. 'train[:90%]' and "
            "'train[90%:]'."
        )
    order = np.random.default_rng(_SLICE_PERMUTATION_SEED).permutation(
        len(folder.files)
    )
    return np.sort(order[start:stop])


def describe_image_folder(
    directory: PathLike,
    split: str = "train",
    num_images: int | None = None,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> DatasetInfo:
    """A `DatasetInfo` for a split of an image folder (decodes every file
    within `max_pixels` unless this process has scanned the unchanged folder
    already)."""
    folder = scan_image_folder(directory, max_pixels)
    count = len(_slice(folder, split))
    if num_images is not None:
        count = min(count, num_images)
    return DatasetInfo(
        name=name or f"folder:{directory}",
        split=split,
        num_images=count,
        num_classes=len(folder.class_names) if folder.class_names else None,
        class_names=folder.class_names,
    )


def _read(path, label):
    return {"image": tf.io.read_file(path), "label": label}


def load_image_folder(
    directory: PathLike,
    *,
    split: str = "train",
    num_images: int | None = None,
    shuffle_files: bool = False,
    seed: int = 0,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Builds a dataset of encoded images from a folder.

    Args:
        directory: str or path-like, the folder.
        split: str, `"train"` with an optional slice (`"train[:90%]"`). Slices
            are taken from a fixed random permutation of the files, so
            complementary slices are disjoint and mix all classes.
        num_images: optional int, keep at most this many images of the slice.
        shuffle_files: bool, whether to read the files in a new seeded random
            order on each pass (a full shuffle of the paths, before reading).
        seed: int, the shuffling seed.
        name: optional str, the name recorded in the returned info.
        max_pixels: int > 0, the scan skips files whose header shows more
            pixels (see `scan_image_folder`).

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts `{"image": tf.string
        (encoded file), "label": int32 scalar}` and its `DatasetInfo`.
    """
    files, labels, info = image_folder_files(
        directory, split=split, num_images=num_images, name=name, max_pixels=max_pixels
    )
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files, tf.string, shape=[len(files)]), labels)
    )
    if shuffle_files and len(files) > 1:
        dataset = dataset.shuffle(
            len(files), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(_read, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, info


def image_folder_files(
    directory: PathLike,
    *,
    split: str = "train",
    num_images: int | None = None,
    name: str | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tuple[list[str], np.ndarray, DatasetInfo]:
    """The readable files of a split of an image folder (within
    `max_pixels`), for reading them by index: `(files, labels, info)`,
    `files` a list of paths, `labels` int32 numpy array (-1 when
    unlabelled), `info` its `DatasetInfo`."""
    folder = scan_image_folder(directory, max_pixels)
    indices = _slice(folder, split)
    if num_images is not None:
        indices = indices[:num_images]
    files = [folder.files[i] for i in indices]
    info = DatasetInfo(
        name=name or f"folder:{directory}",
        split=split,
        num_images=len(files),
        num_classes=len(folder.class_names) if folder.class_names else None,
        class_names=folder.class_names,
    )
    return files, folder.labels[indices], info
