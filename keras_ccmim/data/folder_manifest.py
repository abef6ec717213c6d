"""The manifest of an image folder: its scan (the readable files with their
labels, the count and names of the skipped ones, and the pixel cap it was
made with) as JSON.

`write_image_folder_manifest` saves a manifest where a run writes its
outputs (never in the image folder); `read_image_folder_manifest` lets a
later process reuse it while the folder is unchanged, so its scan decodes
nothing.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from keras_ccmim.data.image_folder_scan import adopt_scan, scan, scan_key
from keras_ccmim.data.image_header import DEFAULT_MAX_PIXELS
from keras_ccmim.type_aliases import PathLike

MANIFEST_FORMAT = "keras_ccmim.image_folder_manifest"
# 2: the pixel cap and the files over it (version 1 had no cap: its folders
# are scanned again).
MANIFEST_VERSION = 2

logger = logging.getLogger(__name__)


def image_folder_manifest(
    directory: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> dict[str, Any]:
    """The manifest of a folder as a JSON-ready dict (scans it if this
    process has not, with cap `max_pixels`): its absolute path and
    fingerprint, the class names, the readable files (relative paths) with
    their labels, the count and names of the undecodable files, and the cap
    with the files over it."""
    directory = os.fspath(directory)
    folder, key = scan(directory, max_pixels)
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
        "max_pixels": folder.max_pixels,
        "too_large": list(folder.too_large),
    }


def _is_inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    try:
        return os.path.commonpath([path, directory]) == directory
    except ValueError:  # different drives
        return False


def write_image_folder_manifest(
    directory: PathLike, path: PathLike, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> str | None:
    """Writes the manifest of a folder (see `image_folder_manifest`, with
    cap `max_pixels`) as JSON.

    The file is written beside `path` and renamed onto it. A `path` inside
    the image folder is refused: nothing is written there.

    Args:
        directory: str or path-like, the image folder.
        path: str or path-like, the JSON file, where the run writes its
            outputs.
        max_pixels: int > 0, the pixel cap of the scan (as the run's).

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
    manifest = image_folder_manifest(directory, max_pixels)
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


def read_image_folder_manifest(path: PathLike) -> bool:
    """Reuses a manifest `write_image_folder_manifest` wrote, if it still
    describes its folder: the next scan of the folder then decodes nothing.

    A missing, damaged or foreign file (or one of an earlier version), or a
    folder whose images changed (names, sizes or modification times), is
    ignored: the folder is then scanned as usual. The manifest holds for
    scans with the pixel cap it was made with.

    Returns:
        bool, whether the manifest was taken.
    """
    try:
        with open(path) as f:
            manifest = json.load(f)
        directory, skipped = manifest["directory"], manifest["skipped"]
        too_large, max_pixels = manifest["too_large"], manifest["max_pixels"]
        names = (skipped, too_large)
        if (
            manifest.get("format") != MANIFEST_FORMAT
            or manifest.get("version") != MANIFEST_VERSION
            or not isinstance(directory, str)
            or not all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in names)
            or isinstance(max_pixels, bool)
            or not isinstance(max_pixels, int)
            or max_pixels <= 0
            or not os.path.isdir(directory)
        ):
            return False
        key, listing = scan_key(directory, max_pixels)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    if key != (directory, manifest.get("fingerprint"), max_pixels) or not (
        set(skipped) | set(too_large) <= set(listing.relative)
    ):
        return False
    adopt_scan(key, skipped, too_large)
    return True
