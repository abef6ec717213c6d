"""The checkpoint folder on disk: which checkpoints it holds, the newest
intact one, and rolling a run back to an earlier step.

A folder holds `ckpt-<step>.weights.h5` files, the log `checkpoints.jsonl`
(one record per save) and the pointer `checkpoint.json` (the record of the
checkpoint to resume from); `TrainingCheckpoint` writes them.
"""

import json
import logging
import os
import time

from keras_ccmim.run_files import write_json_atomically

logger = logging.getLogger(__name__)


CHECKPOINT_POINTER = "checkpoint.json"
CHECKPOINT_LOG = "checkpoints.jsonl"
CHECKPOINT_PATTERN = "ckpt-{:08d}.weights.h5"

class CheckpointError(ValueError):
    """A checkpoint folder from which no intact checkpoint can be restored
    (or whose checkpoint contradicts its own record); the message names the
    folder and the fix."""


_CHECKPOINT_PREFIX, _CHECKPOINT_SUFFIX = "ckpt-", ".weights.h5"


def _step_of_name(name):
    """The global step of a `ckpt-<step>.weights.h5` name, else None."""
    if not (name.startswith(_CHECKPOINT_PREFIX) and name.endswith(_CHECKPOINT_SUFFIX)):
        return None
    digits = name[len(_CHECKPOINT_PREFIX):-len(_CHECKPOINT_SUFFIX)]
    return int(digits) if digits.isdigit() else None


def checkpoint_names(directory):
    """The `ckpt-*.weights.h5` names in `directory`, newest step first."""
    if not os.path.isdir(directory):
        return []
    names = [n for n in os.listdir(directory) if _step_of_name(n) is not None]
    return sorted(names, key=_step_of_name, reverse=True)


def _read_record(text):
    """A checkpoint record parsed from JSON text, or None when it is damaged."""
    try:
        record = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("weights"), str)
        or not isinstance(record.get("global_step"), int)
    ):
        return None
    return record


def checkpoint_candidates(directory):
    """Every checkpoint `directory` may be restored from, best first, as
    `(record, source)` pairs; `record["weights"]` is a path, `source` names
    where the record came from.

    The pointer `checkpoint.json` first, then the records of
    `checkpoints.jsonl` (newest first), then the `ckpt-*.weights.h5` files
    themselves (newest step first; their records hold only `weights`,
    `global_step`, `epoch`, `batch` and `steps_per_epoch` when a record
    gave the run's `steps_per_epoch`). Damaged records are skipped, as are
    records whose weights file is gone; whether a weights file is intact is
    only known when it is loaded (see `TrainingCheckpoint.restore`)."""
    directory = os.fspath(directory)
    records = []
    pointer = os.path.join(directory, CHECKPOINT_POINTER)
    if os.path.exists(pointer):
        with open(pointer) as f:
            record = _read_record(f.read())
        if record is not None:
            records.append((record, CHECKPOINT_POINTER))
    log = os.path.join(directory, CHECKPOINT_LOG)
    if os.path.exists(log):
        with open(log) as f:
            lines = f.read().splitlines()
        for line in reversed(lines):
            record = _read_record(line)
            if record is not None:
                records.append((record, CHECKPOINT_LOG))
    steps_per_epoch = next(
        (r["steps_per_epoch"] for r, _ in records if isinstance(r.get("steps_per_epoch"), int)
         and r["steps_per_epoch"] > 0),
        None,
    )
    for name in checkpoint_names(directory):
        record = {"weights": name, "global_step": _step_of_name(name)}
        if steps_per_epoch:
            epoch, batch = divmod(record["global_step"], steps_per_epoch)
            record.update(epoch=epoch, batch=batch, steps_per_epoch=steps_per_epoch)
        records.append((record, "the checkpoint files"))
    candidates, seen = [], set()
    for record, source in records:
        name = record["weights"]
        if name in seen or os.path.dirname(name):
            continue
        seen.add(name)
        if not os.path.isfile(os.path.join(directory, name)):
            continue
        candidates.append((dict(record, weights=os.path.join(directory, name)), source))
    return candidates


def holds_checkpoints(directory):
    """Whether `directory` holds any trace of checkpoints (a pointer, a log
    or weights files), intact or not."""
    directory = os.fspath(directory)
    return any(
        os.path.exists(os.path.join(directory, name))
        for name in (CHECKPOINT_POINTER, CHECKPOINT_LOG)
    ) or bool(checkpoint_names(directory))


def latest_checkpoint(directory):
    """The record of the newest checkpoint in `directory` that has a readable
    record and weights file (see `checkpoint_candidates`), or None. Keys:
    `weights` (a path), `global_step`, and when its record has them `epoch`,
    `batch`, `steps_per_epoch`, `loss`, `batch_loss`, `learning_rate`,
    `time`."""
    candidates = checkpoint_candidates(directory)
    return candidates[0][0] if candidates else None


ROLLBACK_PREFIX = "abandoned-after-step-"


def roll_back_to_step(directory, step):
    """Makes the checkpoint of global step `step` the one a run resumes from.

    The checkpoints of later steps are moved (never deleted) into
    `<directory>/abandoned-after-step-<step>[-<n>]/`, the pointer is set to
    `step`'s record, and `checkpoints.jsonl` records the roll-back. Asking
    again for a step this folder was already rolled back to does nothing
    (the same command can be rerun after a kill and resumes from the newest
    checkpoint of the continued run).

    Returns:
        The folder the later checkpoints went to, or None when nothing moved.

    Raises:
        CheckpointError: no checkpoint of `step` is in `directory`; the
            message lists the steps that are.
    """
    directory = os.fspath(directory)
    step = int(step)
    log = os.path.join(directory, CHECKPOINT_LOG)
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("rolled_back_to_step") == step:
                    logger.info(f"This run was already rolled back to step {step} (the later "
                          f"checkpoints went to {entry.get('moved_to')}); resuming from its "
                          "newest checkpoint.")
                    return None
    candidates = checkpoint_candidates(directory)
    record = next((r for r, _ in candidates if r["global_step"] == step), None)
    if record is None:
        steps = sorted({r["global_step"] for r, _ in candidates})
        raise CheckpointError(
            f"No checkpoint of step {step} in {directory}; it holds steps "
            f"{steps or 'none'}. Pass one of those to --resume_from_step (resume_from_step)."
        )
    later = [n for n in checkpoint_names(directory) if _step_of_name(n) > step]
    moved_to = None
    if later:
        moved_to = os.path.join(directory, f"{ROLLBACK_PREFIX}{step}")
        index = 1
        while os.path.lexists(moved_to):
            index += 1
            moved_to = os.path.join(directory, f"{ROLLBACK_PREFIX}{step}-{index}")
        os.makedirs(moved_to)
        for name in later:
            os.replace(os.path.join(directory, name), os.path.join(moved_to, name))
    record = {k: v for k, v in record.items() if k != "source"}
    write_json_atomically(os.path.join(directory, CHECKPOINT_POINTER), record)
    with open(log, "a") as f:
        f.write(json.dumps({"rolled_back_to_step": step, "moved_to": moved_to,
                            "moved": later, "time": time.time()}) + "\n")
    where = f"; the checkpoints of later steps were moved to {moved_to}" if later else ""
    logger.info(f"Rolled back to the checkpoint of step {step}{where}.")
    return moved_to
