"""Where an export writes: the target folder's checks, the staging folder
beside it, what a killed export left there, and the final rename.

The export never deletes what it did not write. The target must be new, an
empty folder, or, with `overwrite=True`, a folder holding a SavedModel and
nothing else (`saved_model.pb`, `fingerprint.pb`, `variables/`, `assets/`,
...); anything else is refused. The SavedModel is written to a hidden
temporary folder beside the target (`.NAME.export-XXXXXXXX`) and renamed
into place only once complete, so an interrupted export leaves an existing
SavedModel as it was. While it runs, the export holds a lock on a file in
that folder (`fcntl.flock`, released by the OS when the process dies); the
next export to the same target (one whose target passes its checks) removes
the folders a killed one left there: those with its naming, holding only what it writes, whose lock is
free. A SavedModel such a folder holds aside (killed between its two
renames) is put back first. (Without `fcntl`, on Windows, no lock is taken
and such folders are left as they are.) The target may not be, hold, or lie
inside a folder passed as `protected`: the binary passes the pretraining
workdir, so its checkpoints and encoder are never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence

from keras_ccmim.file_io import check_writable_location
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

SAVED_MODEL_PROTOS = ("saved_model.pb", "saved_model.pbtxt")
# Everything TensorFlow (or Keras) writes at the top of a SavedModel folder.
SAVED_MODEL_FILES = SAVED_MODEL_PROTOS + ("fingerprint.pb", "keras_metadata.pb")
SAVED_MODEL_FOLDERS = ("variables", "assets", "assets.extra")
# What a staging folder holds: the new SavedModel, the one it replaces, the lock.
STAGED, REPLACED, LOCK_FILE = "saved_model", "replaced", "export.lock"


def is_saved_model(path: PathLike) -> bool:
    """Whether `path` is a folder with a `saved_model.pb` (or `.pbtxt`)."""
    path = os.fspath(path)
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_PROTOS
    )


def holds_only_saved_model(path: PathLike) -> bool:
    """Whether folder `path` holds a SavedModel and nothing else: the files
    and folders TensorFlow writes there, `variables/` holding only
    `variables.index` and `variables.data-*`. Only such a folder is replaced
    by `export_saved_model(..., overwrite=True)`."""
    path = os.fspath(path)
    if os.path.islink(path) or not is_saved_model(path):
        return False
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if os.path.islink(entry):
            return False
        if name in SAVED_MODEL_FILES:
            if not os.path.isfile(entry):
                return False
        elif name in SAVED_MODEL_FOLDERS:
            if not os.path.isdir(entry):
                return False
        else:
            return False
    variables = os.path.join(path, "variables")
    if os.path.isdir(variables):
        for name in os.listdir(variables):
            entry = os.path.join(variables, name)
            if os.path.islink(entry) or not os.path.isfile(entry):
                return False
            if name != "variables.index" and not name.startswith("variables.data-"):
                return False
    return True


def _within(path, folder):
    """Whether `path` is `folder` or lies inside it (both absolute, real)."""
    return os.path.commonpath([path, folder]) == folder


def check_export_target(
    path: PathLike, overwrite: bool = False, protected: Sequence[PathLike | None] = ()
) -> str:
    """Checks that `export_saved_model` may write `path` (see module doc).

    Args:
        path: the target folder.
        overwrite: whether an existing SavedModel there may be replaced.
        protected: folders (e.g. the pretraining workdir) that must not be
            the target, contain it, or lie inside it; None entries are
            skipped.

    Returns:
        The target as an absolute path with symbolic links resolved.

    Raises:
        ValueError: naming the problem and the fix.
    """
    given = os.fspath(path)
    if not given:
        raise ValueError("The SavedModel path is empty; pass the folder to write.")
    target = os.path.realpath(given)
    for folder in protected:
        if folder is None:
            continue
        folder_path = os.path.realpath(os.fspath(folder))
        if _within(target, folder_path) or _within(folder_path, target):
            relation = (
                "is"
                if target == folder_path
                else "is inside" if _within(target, folder_path) else "contains"
            )
            raise ValueError(
                f"The SavedModel folder {given!r} {relation} the workdir {folder!r}; the "
                "export never writes into (or over) a run's folder, its checkpoints or "
                f"its encoder. Pass a folder outside it, e.g. "
                f"--saved_model={folder_path.rstrip(os.sep)}_saved_model."
            )
    if os.path.lexists(target) and not os.path.isdir(target):
        raise ValueError(
            f"The SavedModel path {given!r} is a file, not a folder; the export does not "
            "replace it. Pass a new folder path."
        )
    # Where the staging folder goes.
    check_writable_location(os.path.dirname(target), f"The SavedModel folder {given!r}", "a folder")
    if os.path.isdir(target) and os.listdir(target):
        if not overwrite:
            what = "a SavedModel" if is_saved_model(target) else "files"
            raise ValueError(
                f"The SavedModel folder {given!r} already holds {what}. Pass --overwrite "
                "(overwrite=True) to replace a SavedModel there, or choose a new folder."
            )
        if not holds_only_saved_model(target):
            raise ValueError(
                f"The SavedModel folder {given!r} holds files that are not a SavedModel's "
                "(--overwrite replaces only a folder holding a SavedModel and nothing "
                "else). Choose a new folder, or move those files away first."
            )
    return target


def _staging_prefix(target):
    return f".{os.path.basename(target)}.export-"


def _fcntl():
    """The `fcntl` module, None where there is none (Windows)."""
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


def _lock(staging):
    """An open file in `staging` holding an exclusive `flock` until it is
    closed or the process dies; None without `fcntl`. Locked under another
    name and then renamed, so `LOCK_FILE` is never unlocked while its
    export runs."""
    fcntl = _fcntl()
    if fcntl is None:
        return None
    pending = os.path.join(staging, LOCK_FILE + ".new")
    lock = open(pending, "w")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(pending, os.path.join(staging, LOCK_FILE))
    return lock


@contextlib.contextmanager
def staging_folder(target: str) -> Iterator[str]:
    """A new folder beside `target`, locked while the export runs, deleted
    with everything in it at the end."""
    staging = tempfile.mkdtemp(prefix=_staging_prefix(target), dir=os.path.dirname(target))
    lock = _lock(staging)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if lock is not None:
            lock.close()


def _abandoned(folder):
    """The lock of a staging folder whose export has ended (locked now by
    this process), or None while its export still runs."""
    lock = open(os.path.join(folder, LOCK_FILE))
    try:
        fcntl = _fcntl()
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock


def remove_leftovers(target: str) -> None:
    """Removes the staging folders of killed exports to `target` (see the
    module doc); only folders named `.NAME.export-XXXXXXXX` beside it,
    holding the lock file and only what an export writes there."""
    if _fcntl() is None:  # nothing was locked: a folder might be a running export's
        return
    parent = os.path.dirname(target)
    pattern = re.compile(re.escape(_staging_prefix(target)) + r"[a-z0-9_]{8}")
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if not pattern.fullmatch(name) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        entries = set(os.listdir(folder))
        if LOCK_FILE not in entries or not entries <= {LOCK_FILE, STAGED, REPLACED}:
            continue
        lock = _abandoned(folder)
        if lock is None:
            continue
        with lock:
            if REPLACED in entries and STAGED in entries:
                # Killed between its two renames: the old SavedModel is aside.
                if os.path.lexists(target):
                    logger.warning(
                        "%s holds the SavedModel a killed export moved aside from %s, "
                        "which exists again; both are left as they are.", folder, target,
                    )
                    continue
                os.rename(os.path.join(folder, REPLACED), target)
                logger.warning(
                    "Put back the SavedModel at %s that a killed export had moved aside.",
                    target,
                )
            shutil.rmtree(folder)
            logger.warning("Removed %s, left by a killed export to %s.", folder, target)


def move_into_place(
    staged: str, target: str, staging: str, overwrite: bool, protected: Sequence[PathLike | None]
) -> None:
    """Renames the finished SavedModel `staged` to `target`; an existing
    SavedModel there is first moved into `staging` (deleted with it) and
    put back if the rename fails."""
    check_export_target(target, overwrite=overwrite, protected=protected)  # unchanged?
    replaced = None
    if os.path.isdir(target) and os.listdir(target):
        replaced = os.path.join(staging, REPLACED)
        os.rename(target, replaced)
    elif os.path.isdir(target):
        os.rmdir(target)  # an empty folder
    try:
        os.rename(staged, target)
    except BaseException:
        if replaced is not None:
            os.rename(replaced, target)
        raise
