"""Checkpoints: saving the whole training state, restoring the newest intact
one (falling back past damaged ones), rolling a run back to an earlier step,
and `fit_resumable`, which continues a checkpointed run where it stopped.

A checkpoint folder holds `ckpt-<step>.weights.h5` files, the log
`checkpoints.jsonl` (one record per save and roll-back) and the pointer
`checkpoint.json` (the record of the checkpoint to resume from), all written
by `TrainingCheckpoint`. A record adds to the weights what Keras does not
save: the model's `SeedGenerator` states (`exact_resume.seed_states`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_ccmim.file_io import large_write, write_json_atomically
from keras_ccmim.training.callbacks import (
    DEFAULT_CHECK_EVERY_STEPS,
    PeriodicCallback,
    iterations,
    to_float,
)
from keras_ccmim.training.distribution import (
    barrier,
    is_primary,
    outside_distribution,
)
from keras_ccmim.training.exact_resume import seed_state_owners, seed_states
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


CHECKPOINT_POINTER = "checkpoint.json"
CHECKPOINT_LOG = "checkpoints.jsonl"
CHECKPOINT_PATTERN = "ckpt-{:08d}.weights.h5"
# A checkpoint being written (renamed to its `ckpt-*` name when complete).
PARTIAL_PREFIX = ".partial-"

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


def checkpoint_candidates(directory: PathLike) -> list[tuple[dict[str, Any], str]]:
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


def holds_checkpoints(directory: PathLike) -> bool:
    """Whether `directory` holds any trace of checkpoints (a pointer, a log
    or weights files), intact or not."""
    directory = os.fspath(directory)
    return any(
        os.path.exists(os.path.join(directory, name))
        for name in (CHECKPOINT_POINTER, CHECKPOINT_LOG)
    ) or bool(checkpoint_names(directory))


def latest_checkpoint(directory: PathLike) -> dict[str, Any] | None:
    """The record of the newest checkpoint in `directory` that has a readable
    record and weights file (see `checkpoint_candidates`), or None. Keys:
    `weights` (a path), `global_step`, and when its record has them `epoch`,
    `batch`, `steps_per_epoch`, `loss`, `batch_loss`, `learning_rate`,
    `time`."""
    candidates = checkpoint_candidates(directory)
    return candidates[0][0] if candidates else None


ROLLBACK_PREFIX = "abandoned-after-step-"


def roll_back_to_step(directory: PathLike, step: int) -> str | None:
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



def _all_finite(variables):
    for variable in variables:
        if "float" not in str(variable.dtype):
            continue
        if not np.all(np.isfinite(ops.convert_to_numpy(variable))):
            return False
    return True


# A batch loss above the lowest so far by more than this multiple of it marks
# diverging weights (healthy MIM losses wander by tens of percent, not 4x).
BLOWUP_FACTOR = 3.0


class TrainingCheckpoint(PeriodicCallback):
    """Checkpoints the whole training state for an exact resume.

    Each checkpoint is `ckpt-<global step>.weights.h5` (model weights plus
    the optimizer's variables: moments and `iterations`, hence the learning
    rate schedule's position); its record (in `checkpoints.jsonl` and the
    pointer) adds the states of the model's `SeedGenerator`s, which Keras
    does not save, and which `restore` puts back. It is written in full before the pointer
    `checkpoint.json` is atomically replaced to name it, so a run killed at
    any moment leaves a complete checkpoint behind. The newest
    `max_to_keep` are kept. Each save first appends its record to
    `checkpoints.jsonl` (so every step the pointer ever named is logged).
    A state whose loss or variables are not finite is never saved.

    The loss is read every `check_every_steps` steps, at checkpoints and at
    epoch ends (no host sync in between; see `PeriodicCallback`): the mean
    loss of the steps since the previous read is that window's loss. A
    checkpoint is *healthy* once the window of the steps after it has a
    finite loss that has not blown up (at most `BLOWUP_FACTOR` times above
    the lowest window loss so far); `good` is the newest healthy one, and it
    is never removed to keep `max_to_keep`, so a run whose loss rises to NaN
    over several steps still has a checkpoint from before the rise.

    The epoch and the batch within it are derived from the optimizer's
    `iterations` and `steps_per_epoch`, so they can never disagree with the
    weights.

    Args:
        directory: folder of the checkpoints.
        steps_per_epoch: int, steps in a full epoch.
        save_every_steps: int, also save every this many steps (0: only at
            epoch ends).
        max_to_keep: int >= 1.
        check_every_steps: int >= 1, steps between reads of the loss.
    """

    def __init__(
        self,
        directory: PathLike,
        steps_per_epoch: int,
        save_every_steps: int = 0,
        max_to_keep: int = 2,
        check_every_steps: int = DEFAULT_CHECK_EVERY_STEPS,
    ):
        if int(steps_per_epoch) <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}.")
        if int(save_every_steps) < 0:
            raise ValueError(f"save_every_steps must be >= 0, got {save_every_steps}.")
        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}.")
        if isinstance(check_every_steps, bool) or int(check_every_steps) < 1:
            raise ValueError(
                f"check_every_steps must be a positive integer, got {check_every_steps!r}.")
        super().__init__(check_every_steps)
        self.directory = os.fspath(directory)
        self.steps_per_epoch = int(steps_per_epoch)
        self.save_every_steps = int(save_every_steps)
        self.max_to_keep = int(max_to_keep)
        self._saved_step = None
        self._read_batches = 0
        self._read_mean = 0.0
        self._read_step = 0
        self._batch_loss = None
        self.restored = None
        self.good = None
        self.lowest_loss = None
        self.last_finite_loss = None
        self._last_saved = None

    def restore(self, model: keras.Model) -> int:
        """Loads the newest intact checkpoint into `model` (built and
        compiled) and logs which one it used.

        Tries the pointer `checkpoint.json`, then the records of
        `checkpoints.jsonl`, then the `ckpt-*.weights.h5` files (see
        `checkpoint_candidates`); a checkpoint that cannot be loaded
        (truncated or damaged) is reported and the next older one is tried.

        Returns:
            The global step restored (the optimizer's `iterations`), 0 when
            the folder holds no checkpoint at all.

        Raises:
            CheckpointError: the folder holds checkpoints but none of them
                can be loaded, or a checkpoint holds another step than its
                record says.
        """
        self.restored = None
        candidates = checkpoint_candidates(self.directory)
        if not candidates:
            if holds_checkpoints(self.directory):
                raise CheckpointError(self._nothing_intact([]))
            return 0
        if not model.built:
            model.build()
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        failures = []
        for record, source in candidates:
            try:
                model.load_weights(record["weights"])
            except (OSError, ValueError, KeyError, TypeError) as error:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                failures.append(f"{record['weights']} ({reason[:200]})")
                logger.warning(f"Checkpoint {record['weights']} cannot be loaded ({reason[:200]}); "
                      "trying an older one.")
                continue
            step = iterations(model)
            if step != record["global_step"]:
                raise CheckpointError(
                    f"Checkpoint {record['weights']} holds step {step} but {source} says "
                    f"{record['global_step']}; the checkpoint folder is inconsistent. Move "
                    "the folder away (or pass --fresh) to start over."
                )
            _restore_seed_states(model, record)
            self.restored = dict(record, source=source)
            self._last_saved = record
            logger.info(f"Restored checkpoint {record['weights']} (step {step}, found through "
                  f"{source}).")
            return step
        raise CheckpointError(self._nothing_intact(failures))

    def _nothing_intact(self, failures):
        damaged = f": {'; '.join(failures)}" if failures else ""
        return (
            f"No intact checkpoint is left in {self.directory}{damaged}. Nothing was "
            "deleted. Move the folder away or pass --fresh (fresh=True) to start the run "
            "over; its files are then kept aside, not deleted."
        )

    def newest(self) -> dict[str, Any] | None:
        """The record of the newest intact checkpoint in the folder (see
        `latest_checkpoint`), or None."""
        return latest_checkpoint(self.directory)

    def due(self, step: int) -> bool:
        return super().due(step) or bool(
            self.save_every_steps and step % self.save_every_steps == 0)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._saved_step = None
        self._read_step = self._step

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._read_batches = 0
        self._read_mean = 0.0

    def on_period_end(
        self, step: int, batches: int, logs: dict[str, Any], epoch_end: bool
    ) -> None:
        loss = logs.get("loss")
        if loss is not None and batches > self._read_batches:
            # `loss` is the running mean over this epoch's `batches` batches.
            self._batch_loss = (batches * loss - self._read_batches * self._read_mean) / (
                batches - self._read_batches)
            self._read_batches, self._read_mean = batches, loss
            self._judge(self._batch_loss, since=self._read_step)
        self._read_step = step
        saving = epoch_end or (self.save_every_steps and step % self.save_every_steps == 0)
        if saving and self._saved_step != step:
            self._save(logs, step)

    def _judge(self, window_loss, since):
        """The loss of the steps after `since` was computed with the weights
        of the steps from `since` on: it decides whether a checkpoint saved
        at one of those steps is healthy."""
        if not math.isfinite(window_loss):
            return
        self.last_finite_loss = window_loss
        lowest = self.lowest_loss
        if lowest is not None and window_loss > lowest + BLOWUP_FACTOR * max(abs(lowest), 1e-12):
            return
        self.lowest_loss = window_loss if lowest is None else min(lowest, window_loss)
        saved = self._last_saved
        if saved is not None and since <= saved["global_step"] < self._step:
            self.good = saved

    def _save(self, logs, step):
        loss = (logs or {}).get("loss")
        loss = None if loss is None else to_float(loss)
        if loss is not None and not math.isfinite(loss):
            return
        model = self.model
        if not _all_finite(model.trainable_variables + model.optimizer.variables):
            logger.warning(
                f"\nNot checkpointing step {step}: some weights are not finite."
            )
            return
        name = CHECKPOINT_PATTERN.format(step)
        epoch, batch = divmod(step, self.steps_per_epoch)
        record = {
            "weights": name,
            "global_step": step,
            "epoch": epoch,
            "batch": batch,
            "steps_per_epoch": self.steps_per_epoch,
            "loss": loss,
            "batch_loss": self._batch_loss,
            "learning_rate": to_float(model.optimizer.learning_rate),
            "seed_states": [
                np.asarray(ops.convert_to_numpy(v)).tolist() for v in seed_states(model)
            ],
            "seed_state_owners": seed_state_owners(model),
            "time": time.time(),
            "pid": os.getpid(),
        }
        self._saved_step = step
        self._last_saved = record
        if not is_primary():
            # Several processes hold the same replicated state: process 0
            # writes it, every process resumes from it.
            return
        os.makedirs(self.directory, exist_ok=True)
        # Written under a temporary name and renamed when complete, so a kill
        # during a save never leaves a partial `ckpt-*` file; a killed save's
        # leftover goes with the next save.
        for leftover in os.listdir(self.directory):
            if leftover.startswith(PARTIAL_PREFIX + "ckpt-"):
                os.remove(os.path.join(self.directory, leftover))
        partial = os.path.join(self.directory, PARTIAL_PREFIX + name)
        with large_write(partial, self._expected_size()), outside_distribution():
            model.save_weights(partial, overwrite=True)
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
        os.replace(partial, os.path.join(self.directory, name))
        with open(os.path.join(self.directory, CHECKPOINT_LOG), "a") as f:
            f.write(json.dumps(record) + "\n")
        write_json_atomically(os.path.join(self.directory, CHECKPOINT_POINTER), record)
        self._remove_old(name)

    def _expected_size(self):
        """Bytes the next checkpoint needs: the newest one's size, else the
        variables' (weights and optimizer state)."""
        names = checkpoint_names(self.directory)
        if names:
            return os.path.getsize(os.path.join(self.directory, names[0]))
        variables = self.model.weights + self.model.optimizer.variables
        return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

    def _remove_old(self, newest):
        keep = {newest, self.good and self.good["weights"]}
        names = checkpoint_names(self.directory)
        for name in names[self.max_to_keep:]:
            if name not in keep:
                os.remove(os.path.join(self.directory, name))


def _restore_seed_states(model, record):
    """Puts back the `SeedGenerator` states a checkpoint record holds (the
    weights file does not: Keras saves no seed state), so the resumed run
    draws the masks and drop-path coins the killed run would have drawn."""
    states = seed_states(model)
    saved = record.get("seed_states")
    if saved is None:
        if states:
            logger.warning(
                f"Checkpoint {record['weights']} has no record of the model's random "
                "state (it was found without its checkpoints.jsonl record, or written by "
                "an older version): the run trains on with freshly seeded masks, so it "
                "is not the run an uninterrupted one would have been."
            )
        return
    owners = seed_state_owners(model)
    saved_owners = record.get("seed_state_owners")
    by_name = saved_owners is not None and len(saved_owners) == len(saved)
    if by_name and len(set(owners)) == len(owners) == len(states):
        # Each state goes back to the layer that drew it, whatever order this
        # version of the model creates its SeedGenerators in.
        if sorted(saved_owners) != sorted(owners):
            missing = sorted(set(owners) - set(saved_owners))
            extra = sorted(set(saved_owners) - set(owners))
            raise CheckpointError(
                f"Checkpoint {record['weights']} records the random states of other "
                f"layers than this model's (model only: {missing[:3]}; checkpoint only: "
                f"{extra[:3]}): it was written by a different model. Resume with the "
                "configuration that wrote it, or pass --fresh."
            )
        by_owner = dict(zip(saved_owners, saved))
        saved = [by_owner[owner] for owner in owners]
    elif len(saved) != len(states):
        raise CheckpointError(
            f"Checkpoint {record['weights']} records {len(saved)} random states but the "
            f"model has {len(states)} SeedGenerators: it was written by a different "
            "model. Resume with the configuration that wrote it, or pass --fresh."
        )
    for variable, value in zip(states, saved):
        variable.assign(
            ops.convert_to_tensor(np.asarray(value, "int64"), dtype=variable.dtype)
        )



def fit_resumable(
    model: keras.Model,
    dataset: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    checkpoint_dir: PathLike,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    save_every_steps: int = 0,
    max_to_keep: int = 2,
    verbose: str | int = "auto",
    resume_from_step: int | None = None,
    nan_advice: Callable[[int | None], str] | None = None,
    check_every_steps: int = DEFAULT_CHECK_EVERY_STEPS,
) -> tuple[dict[str, list], int]:
    """Trains `model` for `epochs * steps_per_epoch` steps in total, resuming.

    If `checkpoint_dir` holds an intact checkpoint (see
    `TrainingCheckpoint.restore`), the
    model weights, the optimizer state and its `iterations` (so the learning
    rate schedule) are restored first and training continues at that global
    step: `epoch = step // steps_per_epoch`, and an epoch interrupted after
    `b` batches is finished with its remaining `steps_per_epoch - b` steps
    (a first `fit` call; its epoch logs average only those steps). The
    model's `SeedGenerator` states come back from the checkpoint's record.
    Given `dataset` as a function of the global step (`make_dataset(...,
    start_batch=step)`), each `fit` call reads from the batch its first step
    trains on, so a resumed run is the run an uninterrupted one would have
    been; a plain dataset is read from its start again by every `fit` call.

    Callbacks run in this order: `StopOnNonFiniteLoss`, `callbacks`,
    `TrainingCheckpoint`.

    Args:
        model: a compiled model.
        dataset: `dataset(step)`, the training batches from global step
            `step` on (at least the remaining number), or such a dataset
            itself (e.g. a repeated `tf.data.Dataset`), read from its start.
        epochs: int, total epochs of the run.
        steps_per_epoch: int, steps per epoch.
        checkpoint_dir: folder of the checkpoints.
        callbacks: more Keras callbacks.
        save_every_steps: int, checkpoint every this many steps as well as
            at each epoch end (0: epoch ends only).
        max_to_keep: checkpoints kept.
        verbose: passed to `fit`.
        resume_from_step: optional int, train on from the checkpoint of this
            global step instead of the newest (see `roll_back_to_step`; the
            later checkpoints are moved aside, not deleted). For a run whose
            loss became NaN: the message names the step.
        nan_advice: optional `advice(step) -> str` for the NaN message (see
            `StopOnNonFiniteLoss`).
        check_every_steps: int >= 1, steps between two reads of the loss
            (NaN guard, healthy checkpoints): on the steps between, the
            host does not wait for the device. A NaN stops training at most
            this many steps after it appeared.

    Returns:
        `(history, initial_step)`: `history` maps each logged name to its
        per-epoch values over the epochs run now; `initial_step` is the
        global step training started from (0 for a fresh run).

    Raises:
        NonFiniteLossError: the loss became NaN or infinite. The newest
            checkpoint from before the loss blew up is kept; the message
            names it and the fix.
        CheckpointError: `checkpoint_dir` holds checkpoints but none of them
            can be loaded (`TrainingCheckpoint.restore` falls back from a
            damaged newest checkpoint to an older intact one).
    """
    epochs, steps_per_epoch = int(epochs), int(steps_per_epoch)
    checkpoint = TrainingCheckpoint(
        checkpoint_dir, steps_per_epoch, save_every_steps=save_every_steps,
        max_to_keep=max_to_keep, check_every_steps=check_every_steps,
    )
    guard = StopOnNonFiniteLoss(
        checkpoint=checkpoint, advice=nan_advice,
        check_every_steps=check_every_steps,
    )
    all_callbacks = [guard, *callbacks, checkpoint]
    if resume_from_step is not None and is_primary():
        roll_back_to_step(checkpoint_dir, resume_from_step)
    # Every process of a multi-process run restores the checkpoint process 0
    # wrote (and rolled back to).
    barrier("ccmim_restore")
    initial_step = checkpoint.restore(model)
    total_steps = epochs * steps_per_epoch
    history = {}
    if initial_step >= total_steps:
        logger.info(
            f"Checkpoint in {checkpoint_dir} is at step {initial_step} of {total_steps}: "
            "training already finished."
        )
        return history, initial_step
    epoch, batch = divmod(initial_step, steps_per_epoch)
    if initial_step:
        logger.info(
            f"Resuming from the checkpoint in {checkpoint_dir} at step {initial_step} "
            f"(epoch {epoch + 1}, batch {batch} of {steps_per_epoch})."
        )
    phases = []
    if batch:
        phases.append((epoch, epoch + 1, steps_per_epoch - batch))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    step = initial_step
    for initial_epoch, end_epoch, steps in phases:
        result = model.fit(
            dataset(step) if callable(dataset) else dataset,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps,
            callbacks=all_callbacks,
            shuffle=False,
            verbose=verbose,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        step += (end_epoch - initial_epoch) * steps
        if guard.failure:
            raise NonFiniteLossError(guard.failure)
        if model.stop_training:
            break
    return history, initial_step
