"""The workdir of a pretraining run and its rules: one run at a time holds it
(`WorkdirLock`), what a rerun may change (the comparison of a saved config
with a new one; each field's rule is in its declaration in `config.py`),
resuming the same run, refusing a different one, starting afresh with the
earlier outputs moved aside (`fresh`), and the history its earlier calls
left.

How a run resumes: `pretrain` locks the workdir, then `prepare_workdir`
compares the `config.json` there with the command's. A workdir whose
checkpoint log records a save holds a checkpointed run: the same run (or
one that changes only fields a rerun may change) resumes from its newest
intact checkpoint (`checkpoints.fit_resumable`), a different one is refused
unless `allow_config_change`. A workdir whose run stopped before its first
checkpoint (even during the first save) holds no state worth resuming: the
same run starts from step 0 with the earlier files moved to `previous-<n>/`.
`fresh` always starts over, moving the earlier outputs aside; nothing is
ever deleted.
"""

import fcntl
import json
import logging
import os

from keras_ccmim.file_io import move_aside
from keras_ccmim.models.preset_files import ENCODER_PRESET
from keras_ccmim.models.presets import ALIASES as PRESET_ALIASES
from keras_ccmim.training import config as config_lib
from keras_ccmim.training.checkpoints import holds_checkpoints
from keras_ccmim.training.config import FOLDER_MANIFEST_FILE, ConfigError, PretrainConfig
from keras_ccmim.training.distribution import barrier, is_primary

logger = logging.getLogger(__name__)

# Fields a rerun on a workdir that holds a checkpointed run may change
# freely (where the files and data are, how the run is driven and logged);
# every other field changes what is trained, and a rerun that changes one is
# refused unless allow_config_change. With resume_from_step (a deliberate
# restart from an earlier checkpoint, as the NaN advice says) the
# optimisation knobs of RESTART_CHANGES may change too.
RESUMABLE_CHANGES = config_lib.fields(rerun=config_lib.FREE)
RESTART_CHANGES = config_lib.fields(rerun=config_lib.RESTART)

LOCK_FILE = "run.lock"


class WorkdirLock:
    """An exclusive lock on a workdir: one run at a time writes into it.

    The lock is the operating system's (`fcntl.flock` on
    `<workdir>/run.lock`), taken before the run writes anything else and
    released by the OS when the process ends, however it ends, so a killed
    run never leaves a stale lock. The file holds the PID of the process
    holding it, named in the error a second run gets.
    """

    def __init__(self, workdir):
        self.workdir = os.fspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._file = None

    def __enter__(self):
        os.makedirs(self.workdir, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ConfigError(
                f"workdir {self.workdir!r} is in use by another run (PID {holder}). Wait for "
                "it to end, or pass another --workdir."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info):
        if self._file is not None:
            self._file.close()  # closing the file releases the lock
            self._file = None


def _comparable(name, value):
    """`value` as compared across reruns: lists and tuples (a list read back
    from config.json, a tuple passed in Python) by their items, a preset
    alias as the preset it names."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(name, item) for item in value)
    if name == "preset" and isinstance(value, str):
        return PRESET_ALIASES.get(value, value)
    return value


def _shown(value):
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def config_changes(saved, current):
    """The changes from the `saved` config of a checkpointed run to the
    `current` one (both resolved) that change what the run trains: `(field,
    old, new)` for each field outside `RESUMABLE_CHANGES` (and, when
    `current.resume_from_step` is set, outside `RESTART_CHANGES`) whose
    values differ, in field order. Lists and tuples compare by their items."""
    allowed = set(RESUMABLE_CHANGES)
    if current.resume_from_step is not None:
        allowed.update(RESTART_CHANGES)
    return [
        (name, old, new)
        for name, old, new in all_config_changes(saved, current)
        if name not in allowed
    ]


def all_config_changes(saved, current):
    """`(field, old, new)` for every field whose value differs between two
    configs, in field order (lists and tuples compare by their items)."""
    saved, current = saved.to_dict(), current.to_dict()
    return [
        (name, saved.get(name), value)
        for name, value in current.items()
        if _comparable(name, saved.get(name)) != _comparable(name, value)
    ]


def describe_changes(changes):
    """`"epochs: 2 -> 3, masking: 'random' -> 'importance'"` for `(field, old,
    new)` triples."""
    return ", ".join(
        f"{name}: {_shown(_comparable(name, old))} -> {_shown(_comparable(name, new))}"
        for name, old, new in changes
    )


CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"

# What a run writes in its workdir (besides config.json); `fresh=True` moves
# those of an earlier run aside, nothing else.
RUN_OUTPUTS = (
    "checkpoints", "metrics.csv", "tensorboard", ENCODER_PRESET,
    # The encoder files of earlier versions.
    "encoder.weights.h5", "encoder_config.json",
    "pretrainer.keras", "masks.png", RESULTS_FILE, CONFIG_FILE,
    FOLDER_MANIFEST_FILE,
)


def _check_changes(saved, config, workdir, started=True):
    """Refuses a rerun whose config changes what the earlier run in `workdir`
    trains (see `config_changes`) unless `allow_config_change`; logs one line
    for each kind of change that is let through. `started`: the earlier run
    has a checkpoint (else it stopped before its first one)."""
    changes = config_changes(saved, config)
    what = "a checkpointed run" if started else (
        "the files of a run that stopped before its first checkpoint")
    if changes and not config.allow_config_change:
        restart = [name for name, _, _ in changes if name in RESTART_CHANGES]
        note = ""
        if restart and started:
            note = (
                f" ({', '.join(restart)} may change without --allow_config_change when "
                "--resume_from_step trains on from an earlier checkpoint, as the NaN advice "
                "says.)"
            )
        raise ConfigError(
            f"workdir {workdir!r} holds {what} with a different configuration: "
            f"{describe_changes(changes)}. Rerun with the same settings to resume it, pass "
            "--allow_config_change to train on with the new values (config.json is "
            "updated), --fresh to start over (the earlier outputs are moved to "
            f"previous-<n>/), or a new --workdir.{note}"
        )
    if changes:
        logger.info(
            f"Training on with a changed configuration (allow_config_change): "
            f"{describe_changes(changes)}; config.json is updated."
        )
    if config.resume_from_step is None:
        return
    restarted = [
        change for change in all_config_changes(saved, config) if change[0] in RESTART_CHANGES
    ]
    if restarted:
        logger.info(
            f"Training on from step {config.resume_from_step} with "
            f"{describe_changes(restarted)}; config.json is updated."
        )


def prepare_workdir(config, fresh=False):
    """Checks and prepares the workdir of a run (see the module docstring),
    and writes its `config.json`.

    Returns:
        `(workdir, checkpoint_dir)`.

    Raises:
        ConfigError: the workdir holds another run (without
            `allow_config_change`), or files of a run whose configuration
            cannot be read.
    """
    workdir = os.fspath(config.workdir)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    config_path = os.path.join(workdir, CONFIG_FILE)
    if not is_primary():
        # Every process checks the workdir; process 0 alone writes it.
        if not fresh:
            _check_workdir(config, workdir, checkpoint_dir, config_path)
        barrier("ccmim_workdir_checked")
        barrier("ccmim_workdir_written")
        return workdir, checkpoint_dir
    if fresh:
        barrier("ccmim_workdir_checked")
        aside = move_aside(workdir, RUN_OUTPUTS)
        if aside is not None:
            logger.info(
                f"Starting afresh (fresh=True): the earlier run's outputs are kept in {aside}.")
    else:
        state = _check_workdir(config, workdir, checkpoint_dir, config_path)
        barrier("ccmim_workdir_checked")
        if state == "unstarted":
            aside = move_aside(workdir, RUN_OUTPUTS)
            if aside is not None:
                logger.info(
                    f"The earlier start of this run in {workdir} stopped before its first "
                    f"checkpoint: its files are kept in {aside}, and the run starts from "
                    "step 0."
                )
    os.makedirs(checkpoint_dir, exist_ok=True)
    config.save(config_path)
    barrier("ccmim_workdir_written")
    return workdir, checkpoint_dir


def _saved_config(config_path, workdir):
    try:
        return PretrainConfig.load(config_path)
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"{config_path} cannot be read ({error}), so the earlier run in {workdir!r} "
            "cannot be checked against this configuration. Restore the file, pass a new "
            "--workdir, or pass --fresh to start over (the old files are kept aside)."
        ) from error


def _check_workdir(config, workdir, checkpoint_dir, config_path):
    """What `workdir` holds: "checkpointed" (a run with a checkpoint, which
    resumes), "unstarted" (the files of the same run that stopped before its
    first checkpoint) or None (nothing of a run). Raises a `ConfigError` for
    a workdir `prepare_workdir` must refuse."""
    if holds_checkpoints(checkpoint_dir):
        if os.path.exists(config_path):
            _check_changes(_saved_config(config_path, workdir), config, workdir)
        return "checkpointed"
    if os.path.exists(config_path):
        _check_changes(_saved_config(config_path, workdir), config, workdir, started=False)
        return "unstarted"
    if os.path.exists(os.path.join(workdir, "metrics.csv")):
        raise ConfigError(
            f"workdir {workdir!r} holds metrics.csv of an earlier run but neither its "
            "config.json nor a checkpoint, so this command cannot be checked against it. "
            "Pass a new --workdir, or pass --fresh to start over (the old files are kept "
            "aside)."
        )
    return None


def earlier_results(path):
    """The `results.json` of an earlier call on this run, or {}."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def merged_history(earlier, history, initial_step):
    """The earlier calls' per-epoch history (when it ends at or before the
    step this call started from) followed by this call's."""
    old = earlier.get("history")
    if not isinstance(old, dict) or not isinstance(earlier.get("global_step"), int):
        old = {}
    elif earlier["global_step"] > initial_step:
        old = {}
    merged = {k: [float(v) for v in vs] for k, vs in old.items() if isinstance(vs, list)}
    for key, values in history.items():
        merged.setdefault(key, []).extend(float(v) for v in values)
    return merged


def workdir_in_use(path):
    """The PID of the run holding the lock of `path` or of a folder above it
    (its real path), else None: what a program that writes into a folder
    checks first, so that it never writes into a running pretraining's
    workdir."""
    folder = os.path.realpath(os.fspath(path))
    while True:
        try:
            fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDONLY)
        except OSError:  # no lock here (or none this user may read)
            fd = None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.read(fd, 64).decode("ascii", "replace").strip()
                return int(text) if text.isdigit() else "unknown"
            finally:
                os.close(fd)  # closing releases the shared lock, if taken
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent
