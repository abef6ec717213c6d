"""Scanning an image folder: class subfolders give labels, a flat folder none.

    root/cat/0001.jpg, root/dog/a.png, ...  ->  labels 0 (cat), 1 (dog)
    root/0001.jpg, root/b.png, ...          ->  label -1 (unlabelled)

JPEG, PNG, BMP and GIF (first frame) of any size are read; grayscale and
RGBA become RGB. Every file is decoded once up front (JPEGs at 1/8 scale, in
parallel); files that fail are skipped and counted in one warning.

A process scans a folder once: the result (which files are readable) is
kept in memory, keyed by the folder's absolute path and the names, sizes and
modification times of its image files, so that every later use lists and
stats the files but decodes none, and a changed folder is scanned again
(see `keras_ccmim.data.folder_manifest` to keep it across processes).
"""

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import tensorflow as tf

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

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


# (absolute folder, fingerprint) -> relative paths of the undecodable files,
# for each folder state this process has scanned or read a manifest of
# (`keras_ccmim.data.folder_manifest`).
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


def scan_key(directory):
    """The listing of a folder and its cache key."""
    files, labels, class_names, loose = _listing(directory)
    prefix = os.path.join(directory, "")
    relative = [f[len(prefix):] for f in files]
    key = (os.path.abspath(directory), _fingerprint(class_names, relative, files))
    return key, files, labels, class_names, loose, relative


def scan(directory):
    """`(ImageFolder, cache key)` of a folder; see `scan_image_folder`."""
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise ValueError(
            f"Image folder {directory!r} does not exist or is not a "
            "directory. Pass 'folder:<path>' with an existing folder of "
            "images (class subfolders for labels)."
        )
    key, files, labels, class_names, loose, relative = scan_key(directory)
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
    return scan(directory)[0]


def adopt_scan(key, skipped):
    """Takes `skipped` (relative paths) as the scan of the folder state `key`
    (from `scan_key`) unless this process has one: a manifest's result."""
    _SCANS.setdefault(key, tuple(skipped))
