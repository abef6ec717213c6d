"""The manifest of an image folder: its scan (the readable files with their
labels, and the count and names of the skipped ones) as JSON.

`write_image_folder_manifest` saves a manifest where a run writes its
outputs (never in the image folder); `read_image_folder_manifest` lets a
later process reuse it while the folder is unchanged, so its scan decodes
nothing.
"""

import json
import logging
import os

from keras_ccmim.data.image_folder_scan import adopt_scan, scan, scan_key

MANIFEST_FORMAT = "keras_ccmim.image_folder_manifest"
MANIFEST_VERSION = 1

logger = logging.getLogger(__name__)


def image_folder_manifest(directory):
    """The manifest of a folder as a JSON-ready dict (scans it if this
    process has not): its absolute path and fingerprint, the class names,
    the readable files (relative paths) with their labels, and the count and
    names of the skipped files."""
    directory = os.fspath(directory)
    folder, key = scan(directory)
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
        key, _, _, _, _, relative = scan_key(directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return False
    if key != (directory, manifest.get("fingerprint")) or not set(skipped) <= set(relative):
        return False
    adopt_scan(key, skipped)
    return True
