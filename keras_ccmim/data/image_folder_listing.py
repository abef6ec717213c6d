"""Listing an image folder without reading any image: `list_image_folder`.

    root/cat/0001.jpg, root/dog/a.png, ...  ->  labels 0 (cat), 1 (dog)
    root/0001.jpg, root/b.png, ...          ->  label -1 (unlabelled)

A class folder is read recursively, and its label is the class folder of
each path as listed. Links are followed at most once per real folder: a
folder (a link to one, or the real folder itself) whose device and inode
were already walked, or that is the root or a class folder, is not walked
again, so a link loop ends there and a second path to the same folder adds
nothing; and each real file (device and inode) is listed once, at its first
path. Both are counted and named in the listing (`not_followed`,
`duplicates`).
"""

import dataclasses
import os

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """The image files of a folder, as listed (nothing read).

    Args:
        files: list of str, image paths (joined to the folder as given),
            sorted by class then path.
        labels: list of int, each file's label (-1 for a flat folder).
        class_names: list of str, the sorted class folders (empty for a
            flat folder).
        loose: int, images beside class folders (ignored).
        relative: list of str, `files` relative to the folder.
        stats: list of `(size, mtime_ns)` of each file, `(-1, -1)` where it
            cannot be read.
        not_followed: tuple of str, folders (relative paths) not walked
            because their real folder was walked already or is the root
            or a class folder.
        duplicates: tuple of str, files (relative paths) not listed because
            their real file was listed at an earlier path.
    """

    files: list
    labels: list
    class_names: list
    loose: int
    relative: list
    stats: list
    not_followed: tuple = ()
    duplicates: tuple = ()


def is_image_file(name):
    """Whether a file name has an image extension (and is not hidden)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _stat(path):
    try:
        return os.stat(path)
    except OSError:  # vanished, unreadable or a broken link: it fails the decode
        return None


def _identity(stat):
    return (stat.st_dev, stat.st_ino) if stat is not None else None


def _entries(folder):
    """`(sorted folder names, sorted image file names)` of a folder, hidden
    ones left out; both empty when it cannot be listed."""
    try:
        with os.scandir(folder) as scan:
            entries = [entry for entry in scan if not entry.name.startswith(".")]
    except OSError:
        return [], []
    folders, files = [], []
    for entry in sorted(entries, key=lambda entry: entry.name):
        try:
            is_folder = entry.is_dir()
        except OSError:
            is_folder = False
        if is_folder:
            folders.append(entry.name)
        elif is_image_file(entry.name):
            files.append(entry.name)
    return folders, files


class _Walk:
    """One listing's state: the real folders walked or reserved, the real
    files listed, and what was left out."""

    def __init__(self, directory, reserved):
        self.prefix = os.path.join(directory, "")
        self.reserved = set(reserved)
        self.walked = set()
        self.seen = set()
        self.files, self.labels, self.stats = [], [], []
        self.not_followed, self.duplicates = [], []

    def add_file(self, path, label):
        stat = _stat(path)
        identity = _identity(stat)
        if identity is not None and identity in self.seen:
            self.duplicates.append(path[len(self.prefix):])
            return
        if identity is not None:
            self.seen.add(identity)
        self.files.append(path)
        self.labels.append(label)
        self.stats.append((stat.st_size, stat.st_mtime_ns) if stat is not None else (-1, -1))

    def enter(self, folder, own=None):
        """Whether to walk `folder` (whose real folder is `own`, a class
        folder's reserved one, or else not reserved); marks it walked."""
        identity = _identity(_stat(folder))
        if identity is None:
            return False
        if identity in self.walked or (identity in self.reserved and identity != own):
            self.not_followed.append(folder[len(self.prefix):])
            return False
        self.walked.add(identity)
        return True

    def walk(self, top, label):
        """The images under `top`, depth first, each folder's files before
        its subfolders, in name order (as `os.walk`)."""
        if not self.enter(top, own=_identity(_stat(top))):
            return
        stack = [top]
        while stack:
            folder = stack.pop()
            folders, files = _entries(folder)
            for name in files:
                self.add_file(os.path.join(folder, name), label)
            inner = [os.path.join(folder, name) for name in folders]
            stack.extend(path for path in reversed(inner) if self.enter(path))


def list_image_folder(directory):
    """Lists a folder's images: see the module docstring.

    Args:
        directory: str, the folder.

    Returns:
        A `FolderListing`.
    """
    entries = sorted(e for e in os.listdir(directory) if not e.startswith("."))
    class_names = [e for e in entries if os.path.isdir(os.path.join(directory, e))]
    classes = [os.path.join(directory, name) for name in class_names]
    root = _identity(_stat(directory))
    walk = _Walk(directory, [root] + [_identity(_stat(path)) for path in classes])
    loose = 0
    if not class_names:
        for name in entries:
            if is_image_file(name):
                walk.add_file(os.path.join(directory, name), -1)
    else:
        walk.walked.add(root)
        for label, path in enumerate(classes):
            walk.walk(path, label)
        loose = sum(1 for e in entries if is_image_file(e))
    return FolderListing(
        files=walk.files,
        labels=walk.labels,
        class_names=class_names,
        loose=loose,
        relative=[path[len(walk.prefix):] for path in walk.files],
        stats=walk.stats,
        not_followed=tuple(sorted(walk.not_followed)),
        duplicates=tuple(walk.duplicates),
    )
