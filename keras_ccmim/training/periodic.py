"""`PeriodicCallback`: a callback that acts every N global steps and at epoch
ends without making the host wait for the device on the steps between."""

import keras
import numpy as np
from keras import ops

from keras_ccmim.training.optimizer import training_steps

# How often the host reads the loss by default (NaN guard, healthy-checkpoint
# judgement, batch scalars): reading it makes the host wait for the device.
DEFAULT_CHECK_EVERY_STEPS = 20


def to_float(value):
    return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))


def float_logs(logs):
    """The scalar entries of `logs` (nested dicts flattened) as floats."""
    result = {}
    for key, value in (logs or {}).items():
        if isinstance(value, dict):
            result.update(float_logs(value))
            continue
        try:
            result[key] = to_float(value)
        except (TypeError, ValueError):
            pass
    return result


def iterations(model):
    """The global step: training steps (batches) done, also under gradient
    accumulation (`training_steps`)."""
    return int(ops.convert_to_numpy(training_steps(model.optimizer)))


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
        self._step = self._epoch_start = self._handled = iterations(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_start = self._step

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start + batch
        self._step = step
        if step > self._handled and self.due(step):
            self._handled = step
            metrics = float_logs(self.model.get_metrics_result())
            self.on_period_end(step, batch, metrics, epoch_end=False)

    def on_epoch_end(self, epoch, logs=None):
        step = iterations(self.model)
        self._step = step
        self._handled = step
        self.on_period_end(step, step - self._epoch_start, dict(logs or {}), epoch_end=True)

    def on_period_end(self, step, batches, logs, epoch_end):
        """Override: act on the state after `step` global steps."""
