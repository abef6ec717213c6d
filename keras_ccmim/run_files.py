"""Writing a run's own files without losing any: atomic JSON, durable JSON
lines, and moving an earlier run's outputs aside (never deleting them).
Shared by pretraining, its checkpoints, fine-tuning and presets."""

import json
import os


def write_json_atomically(path, data):
    """Writes `data` as JSON to `path` through a synced temporary file, so a
    kill leaves the old file or the new one, never half of one."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_json_line(path, record):
    """Appends `record` as one JSON line to `path`, flushed to disk before it
    returns (a history a killed run resumes from)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def move_aside(folder, names):
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
