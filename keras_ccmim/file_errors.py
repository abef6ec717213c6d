"""File-system errors as one line that names the path and the fix.

The binaries print `describe_os_error(error)` for an `OSError` instead of a
traceback: a workdir that is a file, a read-only location, a missing or
unreadable file, a full disk.
"""

import errno
import os

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


def describe_os_error(error):
    """`error` (an `OSError`) as one line: what failed, on which path, and
    what to do."""
    reason = error.strerror or str(error) or type(error).__name__
    paths = [p for p in (error.filename, error.filename2) if p is not None]
    where = " -> ".join(repr(str(p)) for p in paths)
    fix = _FIXES.get(error.errno, "check that the path exists and is accessible")
    text = f"{reason}: {where}. Fix: {fix}." if where else f"{reason}. Fix: {fix}."
    return " ".join(text.split())


def nearest_existing(path):
    """`path` itself, or its nearest ancestor that exists: where a folder
    that is still to be created would go, to check it is a writable folder."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path
