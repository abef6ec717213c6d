"""Images from a folder: class subfolders give labels, a flat folder none.

    root/cat/0001.jpg, root/dog/a.png, ...  ->  labels 0 (cat), 1 (dog)
    root/0001.jpg, root/b.png, ...          ->  label -1 (unlabelled)

JPEG, PNG, BMP and GIF (first frame) of any size are read; grayscale and
RGBA become RGB. Every file is decoded once up front (JPEGs at 1/8 scale, in
parallel); files that fail are skipped and counted in one warning.

A process scans a folder once: the result (its manifest: the readable files
with their labels, and the count and names of the skipped ones) is kept in
memory, keyed by the folder's absolute path and the names, sizes and
modification times of its image files, so that every later use (describing
a split, reading another, the training and evaluation pipelines) lists and
stats the files but decodes none, and a changed folder is scanned again.
`write_image_folder_manifest` saves a manifest as JSON where a run writes
its outputs (never in the image folder); `read_image_folder_manifest` lets a
later process reuse it while the folder is unchanged.
"""

import dataclasses
import hashlib
import json
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
        skipped: tuple of str, those files' paths relative to `directory`.
    """

    directory: str
    files: tuple
    labels: np.ndarray
    class_names: tuple | None
    num_skipped: int
    skipped: tuple = ()


MANIFEST_FORMAT = "keras_ccmim.image_folder_manifest"
MANIFEST_VERSION = 1
# (absolute folder, fingerprint) -> relative paths of the undecodable files,
# for each folder state this process has scanned or read a manifest of.
_SCANS = {}
# The folder states whose warnings this process has given.
_WARNED = set()


def _is_image_file(name):
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_files(directory):
    """Image files under `directory`, recursively, sorted."""
    found = []
    for root, dirs, files in os.walk(directory, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, f) for f in sorted(files) if _is_image_file(f))
    return found


def _listing(directory):
    """`(files, labels, class_names, loose)` of a folder, without reading
    any file: image paths (joined to `directory` as given) sorted by class
    then path, their labels, the sorted class subfolders (empty for a flat
    folder) and the number of images ignored beside class subfolders."""
    entries = sorted(e for e in os.listdir(directory) if not e.startswith("."))
    class_names = [e for e in entries if os.path.isdir(os.path.join(directory, e))]
    if not class_names:
        files = [os.path.join(directory, e) for e in entries if _is_image_file(e)]
        return files, [-1] * len(files), [], 0
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_files = _list_files(os.path.join(directory, name))
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    loose = sum(1 for e in entries if _is_image_file(e))
    return files, labels, class_names, loose


def _fingerprint(class_names, relative, files):
    """SHA-256 of the class folders and each image file's name, size and
    modification time: any change to the folder's images changes it."""
    digest = hashlib.sha256(json.dumps(class_names).encode())
    for name, path in zip(relative, files):
        try:
            stat = os.stat(path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:  # vanished or unreadable: it fails the decode too
            size = mtime = -1
        digest.update(json.dumps([name, size, mtime]).encode())
    return digest.hexdigest()


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


def _scan_key(directory):
    """The listing of a folder and its cache key."""
    files, labels, class_names, loose = _listing(directory)
    prefix = os.path.join(directory, "")
    relative = [f[len(prefix):] for f in files]
    key = (os.path.abspath(directory), _fingerprint(class_names, relative, files))
    return key, files, labels, class_names, loose, relative


def _scan(directory):
    """`(ImageFolder, cache key)` of a folder; see `scan_image_folder`."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"Image folder {directory!r} does not exist or is not a "
            "directory. Pass 'folder:<path>' with an existing folder of "
            "images (class subfolders for labels)."
        )
    key, files, labels, class_names, loose, relative = _scan_key(directory)
    if key not in _SCANS:
        readable = set(_readable(files))
        _SCANS[key] = tuple(r for r, f in zip(relative, files) if f not in readable)
    skipped = set(_SCANS[key])
    num_skipped = len(skipped)
    if key not in _WARNED:
        _WARNED.add(key)
        if loose:
            logger.warning(
                "Image folder %s has class subfolders; ignoring %d image(s) "
                "directly inside it.",
                directory,
                loose,
            )
        if num_skipped:
            logger.warning(
                "Skipped %d unreadable or corrupt image file(s) out of %d in %s.",
                num_skipped,
                len(files),
                directory,
            )
    keep = [i for i, r in enumerate(relative) if r not in skipped]
    if not keep:
        raise ValueError(
            f"Image folder {directory!r} holds no readable image "
            f"({len(files)} file(s) with extensions {IMAGE_EXTENSIONS} found, "
            f"{num_skipped} unreadable). Put JPEG/PNG images in it, directly "
            "or in one subfolder per class."
        )
    folder = ImageFolder(
        directory=directory,
        files=tuple(files[i] for i in keep),
        labels=np.asarray([labels[i] for i in keep], dtype=np.int32),
        class_names=tuple(class_names) if class_names else None,
        num_skipped=num_skipped,
        skipped=_SCANS[key],
    )
    return folder, key


def scan_image_folder(directory):
    """Lists and checks the images of a folder.

    The first call of a process on a folder decodes every image (and warns
    once about undecodable ones); later calls on the unchanged folder, or on
    one a manifest read with `read_image_folder_manifest` describes, reuse
    that result and only list the files.

    Args:
        directory: str or path-like, the folder.

    Returns:
        An `ImageFolder`.

    Raises:
        ValueError: if the folder does not exist or holds no readable image.
    """
    return _scan(directory)[0]


def image_folder_manifest(directory):
    """The manifest of a folder as a JSON-ready dict (scans it if this
    process has not): its absolute path and fingerprint, the class names,
    the readable files (relative paths) with their labels, and the count and
    names of the skipped files."""
    directory = os.fspath(directory)
    folder, key = _scan(directory)
    prefix = os.path.join(directory, "")
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "directory": key[0],
        "fingerprint": key[1],
        "class_names": list(folder.class_names) if folder.class_names else None,
        "num_files": len(folder.files),
        "files": [
            [path[len(prefix):], int(label)]
            for path, label in zip(folder.files, folder.labels)
        ],
        "num_skipped": folder.num_skipped,
        "skipped": list(folder.skipped),
    }


def _is_inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives
        return False


def write_image_folder_manifest(directory, path):
    """Writes the manifest of a folder (see `image_folder_manifest`) as JSON.

    The file is written beside `path` and renamed onto it. A `path` inside
    the image folder is refused: nothing is written there.

    Args:
        directory: str or path-like, the image folder.
        path: str or path-like, the JSON file, where the run writes its
            outputs.

    Returns:
        `path` as a str, or None when it lies inside the image folder.
    """
    directory, path = os.fspath(directory), os.fspath(path)
    if _is_inside(path, directory):
        logger.warning(
            "Not writing the manifest of image folder %s inside it (%s); the "
            "folder is only read.",
            directory,
            path,
        )
        return None
    manifest = image_folder_manifest(directory)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w") as f:
            json.dump(manifest, f)
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)  # ours, half written
        raise
    return path


def read_image_folder_manifest(path):
    """Reuses a manifest `write_image_folder_manifest` wrote, if it still
    describes its folder: the next scan of the folder then decodes nothing.

    A missing, damaged or foreign file, or a folder whose images changed
    (names, sizes or modification times), is ignored: the folder is then
    scanned as usual.

    Returns:
        bool, whether the manifest was taken.
    """
    try:
        with open(path) as f:
            manifest = json.load(f)
        directory, skipped = manifest["directory"], manifest["skipped"]
        if (
            manifest.get("format") != MANIFEST_FORMAT
            or manifest.get("version") != MANIFEST_VERSION
            or not isinstance(directory, str)
            or not isinstance(skipped, list)
            or not all(isinstance(name, str) for name in skipped)
            or not os.path.isdir(directory)
        ):
            return False
        key, _, _, _, _, relative = _scan_key(directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    if key != (directory, manifest.get("fingerprint")) or not set(skipped) <= set(relative):
        return False
    skipped = tuple(skipped)
    _SCANS.setdefault(key, skipped)
    return True


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
    """A `DatasetInfo` for a split of an image folder (decodes every file
    unless this process has scanned the unchanged folder already)."""
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
    files, labels, info = image_folder_files(
        directory, split=split, num_images=num_images, name=name
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


def image_folder_files(directory, *, split="train", num_images=None, name=None):
    """The readable files of a split of an image folder, for reading them by
    index: `(files, labels, info)`, `files` a list of paths, `labels` int32
    numpy array (-1 when unlabelled), `info` its `DatasetInfo`."""
    folder = scan_image_folder(directory)
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
