"""Scanning an image folder: which of its images are readable.

The folder is listed by `keras_ccmim.data.image_folder_listing` (class
subfolders give labels, a flat folder none; links followed at most once per
real folder, each real file once). JPEG, PNG, BMP and GIF (first frame)
are read; grayscale and RGBA become RGB. Every file's header is read and
the file decoded once up front (JPEGs at 1/8 scale, in parallel): a file
whose header shows more than `max_pixels` pixels is skipped without being
decoded (see `keras_ccmim.data.image_header`), and so is one that fails to
decode; both are counted, and the large ones named, in one warning each.

A process scans a folder once per `max_pixels`: the result (which files are
readable) is kept in memory, keyed by the folder's absolute path, the
names, sizes and modification times of its image files and the cap, so
that every later use lists and stats the files but decodes none, and a
changed folder is scanned again (see `keras_ccmim.data.folder_manifest` to
keep it across processes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import numpy as np
import tensorflow as tf

from keras_ccmim.data.image_folder_listing import IMAGE_EXTENSIONS, list_image_folder
from keras_ccmim.data.image_header import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    decoded_pixels,
)
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

# The files a warning names, at most.
_NAMED = 10


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
        too_large: tuple of str, files (relative paths) skipped undecoded
            because their header shows more than `max_pixels` pixels.
        max_pixels: int, that cap.
        not_followed: tuple of str, folders (relative paths) not walked
            again: their real folder was walked already (a link loop, or a
            second path to it) or is the root or a class folder.
        duplicates: tuple of str, files (relative paths) left out as a
            second path to a file listed already.
    """

    directory: str
    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...] | None
    num_skipped: int
    skipped: tuple[str, ...] = ()
    too_large: tuple[str, ...] = ()
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    not_followed: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()


# (absolute folder, fingerprint, max_pixels) -> relative paths of the
# undecodable files and of those over max_pixels, for each folder state this
# process has scanned or read a manifest of
# (`keras_ccmim.data.folder_manifest`).
_SCANS = {}
# The folder states whose warnings this process has given.
_WARNED = set()


def _fingerprint(class_names, relative, stats):
    """SHA-256 of the class folders and each image file's name, size and
    modification time: any change to the folder's images changes it."""
    digest = hashlib.sha256(json.dumps(class_names).encode())
    for name, (size, mtime) in zip(relative, stats):
        digest.update(json.dumps([name, size, mtime]).encode())
    return digest.hexdigest()


def _check_image(path, max_pixels):
    """`(path, too_large)`; raises for a file that fails to decode or whose
    size cannot be read, and decodes none over `max_pixels`."""
    data = tf.io.read_file(path)
    pixels = decoded_pixels(data)
    readable_size = tf.debugging.Assert(pixels >= 0, ["Not an image of a known size:", path])
    too_large = pixels > max_pixels

    def decode():
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, ratio=8),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
        return tf.shape(image)[0]

    with tf.control_dependencies([readable_size]):
        height = tf.cond(too_large, lambda: tf.constant(0), decode)
    return path, too_large, height


def _readable(files, max_pixels):
    """`(readable, too_large)`: the subsets of `files` that TensorFlow
    decodes without error, and those whose header shows more than
    `max_pixels` pixels (not decoded)."""
    if not files:
        return [], []
    checked = (
        tf.data.Dataset.from_tensor_slices(files)
        .map(lambda path: _check_image(path, max_pixels), num_parallel_calls=tf.data.AUTOTUNE)
        .ignore_errors()
    )
    found = {path.decode(): bool(large) for path, large, _ in checked.as_numpy_iterator()}
    readable = [f for f in files if found.get(f) is False]
    return readable, [f for f in files if found.get(f)]


def scan_key(directory, max_pixels=DEFAULT_MAX_PIXELS):
    """`(key, listing)`: the `FolderListing` of a folder and the key of its
    scan with cap `max_pixels`."""
    listing = list_image_folder(directory)
    fingerprint = _fingerprint(listing.class_names, listing.relative, listing.stats)
    return (os.path.abspath(directory), fingerprint, int(max_pixels)), listing


def _named(paths):
    shown = ", ".join(paths[:_NAMED])
    return shown + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _warn(directory, listing, unreadable, too_large, max_pixels):
    """The warnings of a folder state's first scan in this process."""
    if listing.not_followed:
        logger.warning(
            "Image folder %s: not walking %d folder(s) whose real folder was walked "
            "already or is the root or a class folder (a link loop, or a second path to "
            "the same images): %s. Each real folder is read once.",
            directory, len(listing.not_followed), _named(listing.not_followed),
        )
    if listing.duplicates:
        logger.warning(
            "Image folder %s: %d file(s) are a second path to an image listed already "
            "and are counted once: %s.",
            directory, len(listing.duplicates), _named(listing.duplicates),
        )
    if listing.loose:
        logger.warning(
            "Image folder %s has class subfolders; ignoring %d image(s) "
            "directly inside it.",
            directory,
            listing.loose,
        )
    if unreadable:
        logger.warning(
            "Skipped %d unreadable or corrupt image file(s) out of %d in %s.",
            len(unreadable),
            len(listing.files),
            directory,
        )
    if too_large:
        logger.warning(
            "Skipped %d image file(s) out of %d in %s whose header shows more than "
            "max_pixels=%d pixels, without decoding them (a decompression bomb, or an "
            "image too large to train on): %s. To read them, pass a larger max_pixels.",
            len(too_large), len(listing.files), directory, max_pixels, _named(too_large),
        )


def scan(directory, max_pixels=DEFAULT_MAX_PIXELS):
    """`(ImageFolder, cache key)` of a folder; see `scan_image_folder`."""
    directory = os.fspath(directory)
    max_pixels = check_max_pixels(max_pixels)
    if not os.path.isdir(directory):
        raise ValueError(
            f"Image folder {directory!r} does not exist or is not a "
            "directory. Pass 'folder:<path>' with an existing folder of "
            "images (class subfolders for labels)."
        )
    key, listing = scan_key(directory, max_pixels)
    files, relative = listing.files, listing.relative
    if key not in _SCANS:
        readable, too_large = _readable(files, max_pixels)
        readable, too_large = set(readable), set(too_large)
        _SCANS[key] = (
            tuple(r for r, f in zip(relative, files) if f not in readable | too_large),
            tuple(r for r, f in zip(relative, files) if f in too_large),
        )
    unreadable, too_large = _SCANS[key]
    if key not in _WARNED:
        _WARNED.add(key)
        _warn(directory, listing, unreadable, too_large, max_pixels)
    skipped = set(unreadable) | set(too_large)
    keep = [i for i, r in enumerate(relative) if r not in skipped]
    if not keep:
        raise ValueError(
            f"Image folder {directory!r} holds no readable image "
            f"({len(files)} file(s) with extensions {IMAGE_EXTENSIONS} found, "
            f"{len(unreadable)} unreadable, {len(too_large)} over max_pixels="
            f"{max_pixels}). Put JPEG/PNG images in it, directly or in one subfolder "
            "per class."
        )
    folder = ImageFolder(
        directory=directory,
        files=tuple(files[i] for i in keep),
        labels=np.asarray([listing.labels[i] for i in keep], dtype=np.int32),
        class_names=tuple(listing.class_names) if listing.class_names else None,
        num_skipped=len(unreadable),
        skipped=unreadable,
        too_large=too_large,
        max_pixels=max_pixels,
        not_followed=listing.not_followed,
        duplicates=listing.duplicates,
    )
    return folder, key


def scan_image_folder(
    directory: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> ImageFolder:
    """Lists and checks the images of a folder.

    The first call of a process on a folder (with a given `max_pixels`)
    reads every image's header and decodes every image within the cap (and
    warns once about undecodable ones, too large ones and folders not
    walked again); later calls on the unchanged folder, or on one a
    manifest read with `read_image_folder_manifest` describes, reuse that
    result and only list the files.

    Args:
        directory: str or path-like, the folder.
        max_pixels: int > 0, files whose header shows more pixels (height
            times width; all frames of a GIF) are skipped undecoded.

    Returns:
        An `ImageFolder`.

    Raises:
        ValueError: if the folder does not exist or holds no readable image.
    """
    return scan(directory, max_pixels)[0]


def adopt_scan(key, skipped, too_large):
    """Takes `skipped` and `too_large` (relative paths) as the scan of the
    folder state `key` (from `scan_key`) unless this process has one: a
    manifest's result."""
    _SCANS.setdefault(key, (tuple(skipped), tuple(too_large)))
