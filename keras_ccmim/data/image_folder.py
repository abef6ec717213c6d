"""Images from a folder: class subfolders give labels, a flat folder none.

    root/cat/0001.jpg, root/dog/a.png, ...  ->  labels 0 (cat), 1 (dog)
    root/0001.jpg, root/b.png, ...          ->  label -1 (unlabelled)

JPEG, PNG, BMP and GIF (first frame) of any size are read; grayscale and
RGBA become RGB. Every file is decoded once up front (JPEGs at 1/8 scale, in
parallel); files that fail are skipped and counted in one warning.
"""

import dataclasses
import logging
import os

import numpy as np
import tensorflow as tf

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.splits import split_bounds

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Fixed seed of the permutation applied before slicing, so that
# "train[:90%]" and "train[90%:]" are disjoint random halves in every run.
_SLICE_PERMUTATION_SEED = 0

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """The readable images of a folder.

    Args:
        directory: str, the folder.
        files: tuple of str, readable image paths, sorted by class then path.
        labels: int32 numpy array `[len(files)]`, -1 when unlabelled.
        class_names: tuple of str (sorted subfolder names) or `None` for a
            flat folder.
        num_skipped: int, files with an image extension that could not be
            decoded.
    """

    directory: str
    files: tuple
    labels: np.ndarray
    class_names: tuple | None
    num_skipped: int


def _is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_files(directory):
    """Image files under `directory`, recursively, sorted."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_image_file(f))
    return found


def _check_image(path):
    data = tf.io.read_file(path)
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, ratio=8),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    return path, tf.shape(image)[0]


def _readable(files):
    """The subset of `files` that TensorFlow decodes without error."""
    if not files:
        return []
    checked = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(_check_image, num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    good = {path.decode() for path, _ in checked.as_numpy_iterator()}
    return [f for f in files if f in good]


def scan_image_folder(directory):
    """Lists and checks the images of a folder.

    Args:
        directory: str or path-like, the folder.

    Returns:
        An `ImageFolder`.

    Raises:
        ValueError: if the folder does not exist or holds no readable image.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"Image folder {directory!r} does not exist or is not a "
            "directory. Pass 'folder:<path>' with an existing folder of "
            "images (class subfolders for labels)."
        )
    entries = sorted(e for e in os.listdir(directory) if not e.startswith("."))
    class_names = [e for e in entries if os.path.isdir(os.path.join(directory, e))]
    if class_names:
        loose = [e for e in entries if _is_image_file(e)]
        if loose:
            logger.warning(
                "Image folder %s has class subfolders; ignoring %d image(s) "
                "directly inside it.",
                directory,
                len(loose),
            )
        files, labels = [], []
        for label, name in enumerate(class_names):
            class_files = _list_files(os.path.join(directory, name))
            files.extend(class_files)
            labels.extend([label] * len(class_files))
    else:
        files = [os.path.join(directory, e) for e in entries if _is_image_file(e)]
        labels = [-1] * len(files)

    readable = set(_readable(files))
    num_skipped = len(files) - len(readable)
    if num_skipped:
        logger.warning(
            "Skipped %d unreadable or corrupt image file(s) out of %d in %s.",
            num_skipped,
            len(files),
            directory,
        )
    keep = [i for i, f in enumerate(files) if f in readable]
    if not keep:
        raise ValueError(
            f"Image folder {directory!r} holds no readable image "
            f"({len(files)} file(s) with extensions {IMAGE_EXTENSIONS} found, "
            f"{num_skipped} unreadable). Put JPEG/PNG images in it, directly "
            "or in one subfolder per class."
        )
    return ImageFolder(
        directory=directory,
        files=tuple(files[i] for i in keep),
        labels=np.asarray([labels[i] for i in keep], dtype=np.int32),
        class_names=tuple(class_names) if class_names else None,
        num_skipped=num_skipped,
    )


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


def describe_image_folder(directory, split="train", num_images=None, name=None):
    """A `DatasetInfo` for a split of an image folder (decodes every file)."""
    folder = scan_image_folder(directory)
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
    directory,
    *,
    split="train",
    num_images=None,
    shuffle_files=False,
    seed=0,
    name=None,
):
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

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts `{"image": tf.string
        (encoded file), "label": int32 scalar}` and its `DatasetInfo`.
    """
    folder = scan_image_folder(directory)
    indices = _slice(folder, split)
    if num_images is not None:
        indices = indices[:num_images]
    files = [folder.files[i] for i in indices]
    labels = folder.labels[indices]
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.constant(files, tf.string, shape=[len(files)]), labels)
    )
    if shuffle_files and len(files) > 1:
        dataset = dataset.shuffle(
            len(files), seed=seed, reshuffle_each_iteration=True
        )
    dataset = dataset.map(_read, num_parallel_calls=tf.data.AUTOTUNE)
    info = DatasetInfo(
        name=name or f"folder:{directory}",
        split=split,
        num_images=len(files),
        num_classes=len(folder.class_names) if folder.class_names else None,
        class_names=folder.class_names,
    )
    return dataset, info
