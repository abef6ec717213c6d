"""`TrainingCheckpoint`: periodic checkpoints of the whole training state,
the newest `max_to_keep` kept (and the newest healthy one), for an exact
resume; `restore` loads the newest intact one."""

import json
import logging
import math
import os
import time

import numpy as np
from keras import ops

from keras_ccmim.run_files import write_json_atomically
from keras_ccmim.training.checkpoint_files import (
    CHECKPOINT_LOG,
    CHECKPOINT_PATTERN,
    CHECKPOINT_POINTER,
    CheckpointError,
    checkpoint_candidates,
    checkpoint_names,
    holds_checkpoints,
)
from keras_ccmim.training.distribution import is_primary, outside_distribution
from keras_ccmim.training.periodic import (
    DEFAULT_CHECK_EVERY_STEPS,
    PeriodicCallback,
    iterations,
    to_float,
)
from keras_ccmim.training.seed_state import seed_states

logger = logging.getLogger(__name__)


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
