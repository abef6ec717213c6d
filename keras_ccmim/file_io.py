"""Files: writing the project's own without losing any (atomic JSON, durable
JSON lines, moving an earlier run's outputs aside, never deleting them), and
file-system errors as one line that names the path and the fix.

Shared by pretraining, its checkpoints, fine-tuning, presets and the data
manifests; the binaries print `describe_os_error(error)` for an `OSError`
instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from keras_ccmim.type_aliases import PathLike

_FIXES = {
    errno.EACCES: "change its permissions or choose a location this user can write",
    errno.EPERM: "change its permissions or choose a location this user can write",
    errno.EROFS: "the file system is read-only: choose a location on a writable one",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file stands where a folder is needed: choose another path",
    errno.EISDIR: "a folder stands where a file is needed: pass the file's path",
    errno.ENOENT: "check the path (it does not exist)",
    errno.ENOSPC: "free disk space or choose a location on another disk",
    errno.EDQUOT: "free disk space or choose a location on another disk",
}


def describe_os_error(error: OSError) -> str:
    """`error` (an `OSError`) as one line: what failed, on which path, and
    what to do."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(repr(str(p)) for p in paths)
    fix = _FIXES.get(error.errno, "check that the path exists and is accessible")
    text = f"{reason}: {where}. Fix: {fix}." if where else f"{reason}. Fix: {fix}."
    return " ".join(text.split())


def nearest_existing(path: str) -> str:
    """`path` itself, or its nearest ancestor that exists: where a folder
    that is still to be created would go, to check it is a writable folder."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_writable_location(path: PathLike, subject: str, what_to_pass: str) -> None:
    """Raises a one-line `ValueError` unless what `subject` names (e.g.
    `"workdir 'runs/x'"`) can be created at `path`: its nearest existing
    ancestor must be a folder this process may write into. `what_to_pass`
    ("a workdir", "a path") completes the fix the message gives."""
    existing = nearest_existing(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(existing):
        raise ValueError(
            f"{subject} cannot be created: {existing!r} is a file, not a folder. "
            f"Pass {what_to_pass} whose parents are folders."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"{subject} cannot be written: {existing!r} is read-only (its permissions or a "
            f"read-only file system). Pass {what_to_pass} in a writable location."
        )


def write_json_atomically(path: PathLike, data: Any) -> None:
    """Writes `data` as JSON to `path` through a synced temporary file, so a
    kill leaves the old file or the new one, never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_json_line(path: PathLike, record: Any) -> None:
    """Appends `record` as one JSON line to `path`, flushed to disk before it
    returns (a history a killed run resumes from)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def move_aside(folder: PathLike, names: Iterable[str]) -> str | None:
    """Moves those of `names` present in `folder` into `folder/previous-<n>/`
    (the first free n) and returns that folder, or None when none was
    there. Nothing is deleted, and files not named are left alone."""
    present = [name for name in names if os.path.lexists(os.path.join(folder, name))]
    if not present:
        return None
    index = 1
    while os.path.lexists(os.path.join(folder, f"previous-{index}")):
        index += 1
    aside = os.path.join(folder, f"previous-{index}")
    os.makedirs(aside)
    for name in present:
        os.replace(os.path.join(folder, name), os.path.join(aside, name))
    return aside


def _mib(size):
    return f"{size / 2**20:.1f} MiB"


def _no_space(path, needed=None):
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    need = f", about {_mib(needed)} needed" if needed else ""
    return OSError(
        errno.ENOSPC, f"No space left on device ({_mib(free)} free in {folder}{need})", path
    )


@contextlib.contextmanager
def large_write(path: PathLike, needed_bytes: int = 0) -> Iterator[None]:
    """Guards the writing of a large file of ours (a checkpoint, a saved
    model) at `path`: refuses before writing when the disk has less than
    `needed_bytes` free, and turns a failed write into one `OSError` naming
    the path, the free space and the fix (see `describe_os_error`), after
    removing the partial file. HDF5's object finalisers repeat a failed
    write's error as "Exception ignored" tracebacks; within the block they
    are collected and dropped."""
    if needed_bytes and shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < (
            needed_bytes):
        raise _no_space(path, needed_bytes)
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    except (OSError, RuntimeError) as error:
        gc.collect()  # closes what the writer left open, silently
        if os.path.lexists(path):
            os.remove(path)
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
            raise _no_space(path, needed_bytes) from None
        raise
    finally:
        gc.collect()
        sys.unraisablehook = hook
