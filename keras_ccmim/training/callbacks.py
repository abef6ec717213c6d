"""Callbacks of a pretraining run: NaN guard, checkpoints, logs, foreground lift.

Order them as `fit_resumable` does: `StopOnNonFiniteLoss` first, callbacks
that add entries to the epoch `logs` (`ForegroundLift`, `LogLearningRate`)
before the ones that write them (`MetricsCSV`,
`TensorBoardScalars`), and `TrainingCheckpoint` last.
"""

import contextlib
import json
import math
import os
import time

import keras
import numpy as np
from keras import ops

from keras_ccmim.layers.patching import patchify
from keras_ccmim.masking_metrics import masking_metrics
from keras_ccmim.run_files import write_json_atomically
from keras_ccmim.training.distribution import is_primary, outside_distribution
from keras_ccmim.training.optimizer import training_steps

CHECKPOINT_POINTER = "checkpoint.json"
CHECKPOINT_LOG = "checkpoints.jsonl"
_CHECKPOINT_PATTERN = "ckpt-{:08d}.weights.h5"


def _to_float(value):
    return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))


def _float_logs(logs):
    """The scalar entries of `logs` (nested dicts flattened) as floats."""
    result = {}
    for key, value in (logs or {}).items():
        if isinstance(value, dict):
            result.update(_float_logs(value))
            continue
        try:
            result[key] = _to_float(value)
        except (TypeError, ValueError):
            pass
    return result


def _iterations(model):
    """The global step: training steps (batches) done, also under gradient
    accumulation (`training_steps`)."""
    return int(ops.convert_to_numpy(training_steps(model.optimizer)))


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


def _checkpoint_names(directory):
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
    for name in _checkpoint_names(directory):
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
    ) or bool(_checkpoint_names(directory))


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
                    print(f"This run was already rolled back to step {step} (the later "
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
    later = [n for n in _checkpoint_names(directory) if _step_of_name(n) > step]
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
    print(f"Rolled back to the checkpoint of step {step}{where}.")
    return moved_to


# How often the host reads the loss by default (NaN guard, healthy-checkpoint
# judgement, batch scalars): reading it makes the host wait for the device.
DEFAULT_CHECK_EVERY_STEPS = 20


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


class PeriodicCallback(keras.callbacks.Callback):
    """A callback that acts every `every_steps` global steps and at each
    epoch end, and reads nothing from the device in between.

    Keras converts the batch `logs` to Python floats (which waits for the
    step to finish) only for callbacks that override `on_train_batch_end`;
    without one, on JAX and torch it hands them to a background thread and
    the next step is dispatched at once (TensorFlow's Keras converts them on
    every step whatever the callbacks). So these callbacks count steps on the
    host (from `on_train_batch_begin`'s batch index) and act in
    `on_train_batch_begin` of the step after a due one (between two steps,
    so the model state is that of the due step) or in `on_epoch_end`.
    `on_period_end(step, batches, logs, epoch_end)` gets the global step,
    the batches of this epoch done so far and the epoch's running-mean logs
    (read from the model's metrics, one host sync).

    Args:
        every_steps: int >= 0, steps between actions (0: epoch ends only).
    """

    def __init__(self, every_steps):
        super().__init__()
        if isinstance(every_steps, bool) or int(every_steps) < 0:
            raise ValueError(f"every_steps must be a non-negative integer, got {every_steps!r}.")
        self.every_steps = int(every_steps)
        self._step = 0
        self._epoch_start = 0
        self._handled = 0
        self._epoch = 0

    def due(self, step):
        return bool(self.every_steps) and step % self.every_steps == 0

    def on_train_begin(self, logs=None):
        self._step = self._epoch_start = self._handled = _iterations(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start + batch
        self._step = step
        if step > self._handled and self.due(step):
            self._handled = step
            metrics = _float_logs(self.model.get_metrics_result())
            self.on_period_end(step, batch, metrics, epoch_end=False)

    def on_epoch_end(self, epoch, logs=None):
        step = _iterations(self.model)
        self._step = step
        self._handled = step
        self.on_period_end(step, step - self._epoch_start, dict(logs or {}), epoch_end=True)

    def on_period_end(self, step, batches, logs, epoch_end):
        """Override: act on the state after `step` global steps."""


def _all_finite(variables):
    for variable in variables:
        if "float" not in str(variable.dtype):
            continue
        if not np.all(np.isfinite(ops.convert_to_numpy(variable))):
            return False
    return True


def default_nan_advice(step):
    """What to do after the loss became NaN, for `fit_resumable` callers;
    `step` is the checkpoint to train on from (None: start over)."""
    restart = (f"train on from step {step} (resume_from_step={step})" if step is not None
               else "start over (fresh=True)")
    return (f"Lower the learning rate, lengthen the warmup or train in float32, and "
            f"{restart}.")


class StopOnNonFiniteLoss(PeriodicCallback):
    """Stops training when the loss has become NaN or infinite, by raising
    `NonFiniteLossError` (no further step runs).

    The loss is read every `check_every_steps` steps and at epoch ends (the
    epoch's running mean, which stays NaN once one batch was), so training
    stops at most `check_every_steps` steps after the first bad batch,
    without a host sync on the other steps. The message names the steps,
    the checkpoint to train on from and what to change. Weights that produce
    a NaN have usually diverged some steps before, while their loss was
    still finite but rising; so the checkpoint named is the newest one that
    `checkpoint` (the run's `TrainingCheckpoint`) found healthy, which that
    callback keeps. Put this callback before `TrainingCheckpoint`, which
    itself never saves a non-finite state.

    Args:
        checkpoint_dir: optional folder of the run's `TrainingCheckpoint`,
            named in the message.
        checkpoint: optional `TrainingCheckpoint` of the run; without it the
            newest checkpoint is named.
        advice: optional `advice(step) -> str`, the fix to print, given the
            step of the checkpoint to train on from (None when there is
            none); default `default_nan_advice`.
        check_every_steps: int >= 1, steps between two reads of the loss.
    """

    def __init__(self, checkpoint_dir=None, checkpoint=None, advice=None,
                 check_every_steps=DEFAULT_CHECK_EVERY_STEPS):
        if isinstance(check_every_steps, bool) or int(check_every_steps) < 1:
            raise ValueError(
                f"check_every_steps must be a positive integer, got {check_every_steps!r}.")
        super().__init__(check_every_steps)
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint = checkpoint
        self.advice = advice or default_nan_advice
        self.failure = None
        self.resume_step = None
        self._checked = 0

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.failure = None
        self._checked = self._step

    def on_period_end(self, step, batches, logs, epoch_end):
        loss = logs.get("loss")
        last_checked, self._checked = self._checked, step
        if loss is None or math.isfinite(loss):
            return
        newest = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        good = self.checkpoint.good if self.checkpoint is not None else newest
        history = ""
        if self.checkpoint is not None and self.checkpoint.lowest_loss is not None:
            history = f" The loss had been as low as {self.checkpoint.lowest_loss:.4g}"
            if self.checkpoint.last_finite_loss is not None:
                history += (f"; its last finite value was {self.checkpoint.last_finite_loss:.4g}")
            history += "."
        if good is None:
            kept = (" No checkpoint had been written yet." if newest is None else
                    f" No checkpoint is known to be from before the divergence (the newest, "
                    f"step {newest['global_step']}, may already hold diverged weights).")
        else:
            kept = (f" Checkpoint {good['weights']} (step {good['global_step']}) is the newest "
                    "one from before the loss blew up, and it is kept.")
            if newest is not None and newest["global_step"] != good["global_step"]:
                kept += (f" The newest, step {newest['global_step']}, may already hold "
                         "diverged weights, so a plain rerun (which resumes from it) would "
                         "likely fail again.")
        self.resume_step = None if good is None else int(good["global_step"])
        where = (f"at step {step}" if step - last_checked <= 1 else
                 f"between steps {last_checked + 1} and {step} (the loss is read every "
                 f"{self.every_steps} steps)")
        self.failure = (
            f"Loss became {loss} {where} (epoch {self._epoch + 1}); training stopped."
            f"{history}{kept} {self.advice(self.resume_step)}"
        )
        print("\n" + self.failure)
        raise NonFiniteLossError(self.failure)


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

    def __init__(self, directory, steps_per_epoch, save_every_steps=0, max_to_keep=2,
                 check_every_steps=DEFAULT_CHECK_EVERY_STEPS):
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

    def restore(self, model):
        """Loads the newest intact checkpoint into `model` (built and
        compiled) and prints which one it used.

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
                print(f"Checkpoint {record['weights']} cannot be loaded ({reason[:200]}); "
                      "trying an older one.")
                continue
            step = _iterations(model)
            if step != record["global_step"]:
                raise CheckpointError(
                    f"Checkpoint {record['weights']} holds step {step} but {source} says "
                    f"{record['global_step']}; the checkpoint folder is inconsistent. Move "
                    "the folder away (or pass --fresh) to start over."
                )
            _restore_seed_states(model, record)
            self.restored = dict(record, source=source)
            self._last_saved = record
            print(f"Restored checkpoint {record['weights']} (step {step}, found through "
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

    def due(self, step):
        return super().due(step) or bool(
            self.save_every_steps and step % self.save_every_steps == 0)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._saved_step = None
        self._read_step = self._step

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._read_batches = 0
        self._read_mean = 0.0

    def on_period_end(self, step, batches, logs, epoch_end):
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
        loss = None if loss is None else _to_float(loss)
        if loss is not None and not math.isfinite(loss):
            return
        model = self.model
        if not _all_finite(model.trainable_variables + model.optimizer.variables):
            print(
                f"\nNot checkpointing step {step}: some weights are not finite."
            )
            return
        name = _CHECKPOINT_PATTERN.format(step)
        epoch, batch = divmod(step, self.steps_per_epoch)
        record = {
            "weights": name,
            "global_step": step,
            "epoch": epoch,
            "batch": batch,
            "steps_per_epoch": self.steps_per_epoch,
            "loss": loss,
            "batch_loss": self._batch_loss,
            "learning_rate": _to_float(model.optimizer.learning_rate),
            "seed_states": [
                np.asarray(ops.convert_to_numpy(v)).tolist() for v in _seed_states(model)
            ],
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
        with outside_distribution():
            model.save_weights(os.path.join(self.directory, name), overwrite=True)
        with open(os.path.join(self.directory, CHECKPOINT_LOG), "a") as f:
            f.write(json.dumps(record) + "\n")
        write_json_atomically(os.path.join(self.directory, CHECKPOINT_POINTER), record)
        self._remove_old(name)

    def _remove_old(self, newest):
        keep = {newest, self.good and self.good["weights"]}
        names = _checkpoint_names(self.directory)
        for name in names[self.max_to_keep:]:
            if name not in keep:
                os.remove(os.path.join(self.directory, name))


class ForegroundLift(keras.callbacks.Callback):
    """Logs how much the model's masks prefer the object, on a fixed batch.

    At each epoch end runs `seeded_predict_outputs(model, images, seed)`
    (the compiled `model(images, training=False)`; masks are still sampled,
    but from fixed seeds, so the same weights give the same figures and the
    training's random draws are left as they were) and adds the
    three `keras_ccmim.masking_metrics.MASKING_METRICS` to the epoch `logs`:
    `foreground_lift` (masked foreground share / foreground share; random
    masking gives about 1), `foreground_lift_max` (the lift of masking the
    foreground first, its ceiling on these images) and `mask_selectivity`
    (0 random, 1 foreground first). With importance masking it also adds
    `score_selectivity`, the selectivity of the deterministic top-K of the
    importance scores: what the [CLS] attention has found, before sampling
    spends it. A patch is foreground when at least
    half of its pixels are. Put it before the callbacks that write `logs`
    (`MetricsCSV`, `TensorBoardScalars`).

    Args:
        images: `[B, S, S, 3]` float32, as the model takes them.
        foreground: `[B, S, S]` 0/1 masks of the same images.
        patch_size: the model's patch size.
        seed: int, seed of the measurement's mask sampling.
    """

    def __init__(self, images, foreground, patch_size, seed=0):
        super().__init__()
        self.seed = int(seed)
        self.images = np.asarray(images, dtype="float32")
        self.foreground_patches = foreground_patches(foreground, patch_size)
        self.values = None

    @property
    def value(self):
        """The latest `foreground_lift` (None before the first epoch end)."""
        return None if self.values is None else self.values["foreground_lift"]

    def compute(self, model):
        outputs = seeded_predict_outputs(model, self.images, self.seed)
        values = self.metrics_of(outputs["mask"])
        if "scores" in outputs:
            values["score_selectivity"] = self.metrics_of(
                top_k_mask(outputs["scores"], outputs["mask"])
            )["mask_selectivity"]
        return values

    def metrics_of(self, mask):
        """The three metrics of a `[B, N]` mask of these images (floats)."""
        return masking_metrics(mask, self.foreground_patches)

    def lift_of(self, mask):
        """The `foreground_lift` of a `[B, N]` mask of these images."""
        return self.metrics_of(mask)["foreground_lift"]

    def on_epoch_end(self, epoch, logs=None):
        self.values = self.compute(self.model)
        if logs is not None:
            logs.update(self.values)


def top_k_mask(scores, mask):
    """`[B, N]` 0/1 mask of the `K_i = sum_j mask[i, j]` highest scores of
    each row (numpy; ties broken towards the lower index)."""
    scores = np.asarray(scores)
    k = np.asarray(mask).sum(axis=-1).astype("int64")
    ranks = np.argsort(np.argsort(-scores, axis=-1, kind="stable"), axis=-1)
    return (ranks < k[:, None]).astype("float32")


def predict_outputs(model, images):
    """`model(images, training=False)` as one compiled batch, numpy outputs.

    `model.predict` rather than `predict_on_batch`: under `tf.distribute`
    the latter hands the whole batch to every replica. The masks are
    sampled from the model's `SeedGenerator`s, which this advances; see
    `seeded_predict_outputs` for a measurement that can be repeated.
    """
    return model.predict(images, batch_size=len(images), verbose=0)


def _seed_states(model):
    """The state variables of the model's `SeedGenerator`s, in model order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _restore_seed_states(model, record):
    """Puts back the `SeedGenerator` states a checkpoint record holds (the
    weights file does not: Keras saves no seed state), so the resumed run
    draws the masks and drop-path coins the killed run would have drawn."""
    states = _seed_states(model)
    saved = record.get("seed_states")
    if saved is None:
        if states:
            print(
                f"Checkpoint {record['weights']} has no record of the model's random "
                "state (it was found without its checkpoints.jsonl record, or written by "
                "an older version): the run trains on with freshly seeded masks, so it "
                "is not the run an uninterrupted one would have been."
            )
        return
    if len(saved) != len(states):
        raise CheckpointError(
            f"Checkpoint {record['weights']} records {len(saved)} random states but the "
            f"model has {len(states)} SeedGenerators: it was written by a different "
            "model. Resume with the configuration that wrote it, or pass --fresh."
        )
    for variable, value in zip(states, saved):
        variable.assign(
            ops.convert_to_tensor(np.asarray(value, "int64"), dtype=variable.dtype)
        )


@contextlib.contextmanager
def fixed_seeds(model, seed):
    """Within the block the model's `SeedGenerator`s start from states
    derived from `seed` alone; on leaving, their states are put back as they
    were, so a training run goes on drawing what it would have drawn."""
    states = _seed_states(model)
    saved = [ops.convert_to_numpy(v) for v in states]
    try:
        for index, variable in enumerate(states):
            variable.assign(
                ops.convert_to_tensor(np.array([seed, index], "int64"), dtype=variable.dtype)
            )
        yield
    finally:
        for variable, value in zip(states, saved):
            variable.assign(value)


def seeded_predict_outputs(model, images, seed=0):
    """`predict_outputs(model, images)` with the masks drawn from fixed seeds
    (see `fixed_seeds`): the same weights give the same outputs, whatever the
    training's `SeedGenerator` state, which it does not change."""
    with fixed_seeds(model, int(seed)):
        return predict_outputs(model, images)


def foreground_patches(foreground, patch_size):
    """`[B, S, S]` pixel masks -> `[B, N]` float32, 1 where >= half a patch is
    foreground."""
    foreground = np.asarray(foreground, dtype="float32")[..., None]
    fraction = ops.mean(patchify(foreground, patch_size), axis=-1)
    return np.asarray(ops.convert_to_numpy(fraction) >= 0.5, dtype="float32")


class MetricsCSV(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (append mode, so a resumed run adds rows)
    without the empty `val_*` columns it adds for runs without validation."""

    def __init__(self, filename):
        super().__init__(filename, append=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.keys is None:
            self.keys = sorted(logs or {})
        super().on_epoch_end(epoch, logs)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the optimizer's current `learning_rate` to the epoch `logs`, and
    `sampling_temperature` where the model anneals it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = _to_float(self.model.optimizer.learning_rate)
        selector = getattr(self.model, "selector", None)
        if selector is not None and getattr(selector, "scheduled", False):
            logs["sampling_temperature"] = _to_float(selector.current_temperature())


class TensorBoardScalars(PeriodicCallback):
    """Writes the epoch `logs` (and every `update_freq` steps the running
    means of the epoch so far, without a host sync on the other steps; see
    `PeriodicCallback`) as TensorBoard scalar events under `log_dir`, indexed by epoch
    and by global step.

    `keras.callbacks.TensorBoard` writes scalars through
    `tf.summary.scalar`, which needs the `tensorboard` package (not a
    dependency of this project); this writes the same scalar events with
    TensorFlow's core `tf.summary.write`, on every Keras backend.

    Args:
        log_dir: folder of the event files (`train/` below it).
        update_freq: int, steps between batch scalars; 0 for epochs only.
    """

    def __init__(self, log_dir, update_freq=0):
        super().__init__(update_freq)
        self.log_dir = os.fspath(log_dir)
        self.update_freq = int(update_freq)
        self._writer = None

    def _write(self, prefix, logs, step):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
            data_class=summary_pb2.DATA_CLASS_SCALAR,
        )
        with self._writer.as_default():
            for key, value in sorted((logs or {}).items()):
                try:
                    value = _to_float(value)
                except (TypeError, ValueError):
                    continue
                tf.summary.write(
                    f"{prefix}{key}",
                    tf.constant(value, tf.float32),
                    step=step,
                    metadata=metadata,
                )
        self._writer.flush()

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        super().on_train_begin(logs)
        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_period_end(self, step, batches, logs, epoch_end):
        # `logs` are the epoch's running means, as Keras's batch logs are.
        if self.due(step):
            self._write("batch_", logs, step)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._write("epoch_", logs, epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
