"""Callbacks that watch a run: `PeriodicCallback` (act every N global steps
without a host sync in between), the loggers (`MetricsCSV`,
`LogLearningRate`, `TensorBoardScalars`, `TensorBoardMaskPictures`) and
`ForegroundLift` with the seeded predictions it measures.

Order a run's callbacks as `fit_resumable` does: `StopOnNonFiniteLoss`
first, the callbacks that add entries to the epoch `logs` (`ForegroundLift`,
`LogLearningRate`) before the ones that write them (`MetricsCSV`,
`TensorBoardScalars`), and `TrainingCheckpoint` last.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from keras_ccmim.layers.patching import patchify
from keras_ccmim.masking_metrics import masking_metrics
from keras_ccmim.pictures import mask_picture
from keras_ccmim.training.exact_resume import fixed_seeds
from keras_ccmim.training.optimizer import training_steps
from keras_ccmim.type_aliases import PathLike, Tensor

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

    def __init__(self, every_steps: int):
        super().__init__()
        if isinstance(every_steps, bool) or int(every_steps) < 0:
            raise ValueError(f"every_steps must be a non-negative integer, got {every_steps!r}.")
        self.every_steps = int(every_steps)
        self._step = 0
        self._epoch_start = 0
        self._handled = 0
        self._epoch = 0

    def due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._step = self._epoch_start = self._handled = iterations(self.model)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = self._step

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._epoch_start + batch
        self._step = step
        if step > self._handled and self.due(step):
            self._handled = step
            metrics = float_logs(self.model.get_metrics_result())
            self.on_period_end(step, batch, metrics, epoch_end=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = iterations(self.model)
        self._step = step
        self._handled = step
        self.on_period_end(step, step - self._epoch_start, dict(logs or {}), epoch_end=True)

    def on_period_end(
        self, step: int, batches: int, logs: dict[str, Any], epoch_end: bool
    ) -> None:
        """Override: act on the state after `step` global steps."""


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

    def __init__(
        self, images: ArrayLike, foreground: ArrayLike, patch_size: int, seed: int = 0
    ):
        super().__init__()
        self.seed = int(seed)
        self.images = np.asarray(images, dtype="float32")
        self.foreground_patches = foreground_patches(foreground, patch_size)
        self.values = None

    @property
    def value(self) -> float | None:
        """The latest `foreground_lift` (None before the first epoch end)."""
        return None if self.values is None else self.values["foreground_lift"]

    def compute(self, model: keras.Model) -> dict[str, float]:
        outputs = seeded_predict_outputs(model, self.images, self.seed)
        values = self.metrics_of(outputs["mask"])
        if "scores" in outputs:
            values["score_selectivity"] = self.metrics_of(
                top_k_mask(outputs["scores"], outputs["mask"])
            )["mask_selectivity"]
        return values

    def metrics_of(self, mask: ArrayLike) -> dict[str, float]:
        """The three metrics of a `[B, N]` mask of these images (floats)."""
        return masking_metrics(mask, self.foreground_patches)

    def lift_of(self, mask: ArrayLike) -> float:
        """The `foreground_lift` of a `[B, N]` mask of these images."""
        return self.metrics_of(mask)["foreground_lift"]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
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


def predict_outputs(model: keras.Model, images: Tensor) -> Any:
    """`model(images, training=False)` as one compiled batch, numpy outputs.

    `model.predict` rather than `predict_on_batch`: under `tf.distribute`
    the latter hands the whole batch to every replica. The masks are
    sampled from the model's `SeedGenerator`s, which this advances; see
    `seeded_predict_outputs` for a measurement that can be repeated.
    """
    return model.predict(images, batch_size=len(images), verbose=0)


def seeded_predict_outputs(model: keras.Model, images: Tensor, seed: int = 0) -> Any:
    """`predict_outputs(model, images)` with the masks drawn from fixed seeds
    (see `fixed_seeds`): the same weights give the same outputs, whatever the
    training's `SeedGenerator` state, which it does not change."""
    with fixed_seeds(model, int(seed)):
        return predict_outputs(model, images)


def foreground_patches(foreground: ArrayLike, patch_size: int) -> np.ndarray:
    """`[B, S, S]` pixel masks -> `[B, N]` float32, 1 where >= half a patch is
    foreground."""
    foreground = np.asarray(foreground, dtype="float32")[..., None]
    fraction = ops.mean(patchify(foreground, patch_size), axis=-1)
    return np.asarray(ops.convert_to_numpy(fraction) >= 0.5, dtype="float32")


class MetricsCSV(keras.callbacks.CSVLogger):
    """`keras.callbacks.CSVLogger` (append mode, so a resumed run adds rows)
    without the empty `val_*` columns it adds for runs without validation."""

    def __init__(self, filename: PathLike):
        super().__init__(filename, append=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.keys is None:
            self.keys = sorted(logs or {})
        super().on_epoch_end(epoch, logs)


class LogLearningRate(keras.callbacks.Callback):
    """Adds the optimizer's current `learning_rate` to the epoch `logs`, and
    `sampling_temperature` where the model anneals it."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        logs["learning_rate"] = to_float(self.model.optimizer.learning_rate)
        selector = getattr(self.model, "selector", None)
        if selector is not None and getattr(selector, "scheduled", False):
            logs["sampling_temperature"] = to_float(selector.current_temperature())


class TensorBoardScalars(keras.callbacks.TensorBoard):
    """`keras.callbacks.TensorBoard` for the scalars of a resumable run: the
    epoch `logs` as `epoch_<name>` (indexed by epoch) and, every
    `update_freq` global steps, the running means of the epoch so far as
    `batch_<name>` (indexed by global step), under `log_dir/train/`.

    It differs from its parent in two ways. The batch scalars are written
    in `on_train_batch_begin` of the step after a due one, from the model's
    metrics, and `on_train_batch_end` is left as Keras's default: a callback
    that overrides it makes Keras wait for every step on JAX and torch (see
    `PeriodicCallback`). And the step count starts at the optimizer's, so a
    resumed run goes on numbering where the killed one stopped instead of
    from 0. Each write is flushed, so a killed run keeps what it wrote.

    Args:
        log_dir: folder of the event files (`train/` below it).
        update_freq: int >= 0, steps between batch scalars; 0 for epochs only.
    """

    # Keras's default (no override), so Keras need not sync on every step.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def __init__(self, log_dir: PathLike, update_freq: int = 0):
        if isinstance(update_freq, bool) or int(update_freq) < 0:
            raise ValueError(f"update_freq must be a non-negative integer, got {update_freq!r}.")
        # "epoch" for the parent: the batch scalars are written here.
        super().__init__(log_dir=os.fspath(log_dir), write_graph=False, update_freq="epoch")
        self.every_steps = int(update_freq)
        self._written = 0

    def _due(self, step):
        return bool(self.every_steps) and step % self.every_steps == 0 and step > self._written

    def _write_batch_scalars(self, step, logs):
        self._written = step
        with self._train_writer.as_default():
            for name, value in sorted(logs.items()):
                self.summary.scalar(f"batch_{name}", value, step=step)
        self._train_writer.flush()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._global_train_batch = self._written = iterations(self.model)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # `_global_train_batch` counts the steps done before this one.
        step = self._global_train_batch
        if self._due(step):
            # The epoch's running means, as Keras's batch logs are.
            self._write_batch_scalars(step, float_logs(self.model.get_metrics_result()))
        super().on_train_batch_begin(batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        step = self._global_train_batch = iterations(self.model)
        if self._due(step):
            self._write_batch_scalars(step, float_logs(logs))
        self._written = step
        super().on_epoch_end(epoch, logs)
        self._train_writer.flush()


class TensorBoardMaskPictures(keras.callbacks.Callback):
    """Writes, at each epoch end, the picture of the model's masks and
    reconstructions on fixed images (`keras_ccmim.pictures.mask_picture`:
    one row per image; labelled columns image, masked input,
    reconstruction and, with importance masking, importance) as the
    TensorBoard image `masks` under `log_dir/train/`, indexed by epoch.

    The masks are drawn from fixed seeds (`seeded_predict_outputs`), so the
    training's random draws are left as they were. The image is written
    with `tf.summary.image`, as `keras.callbacks.TensorBoard` writes its
    summaries, on every Keras backend.

    Args:
        log_dir: folder of the event files (`train/` below it).
        images: `[B, S, S, 3]` normalised images, as the model takes them
            (predicted as one batch).
        patch_size: the model's patch size.
        seed: int, seed of the masks' sampling.
        max_images: rows drawn (the first images).
    """

    def __init__(
        self,
        log_dir: PathLike,
        images: Tensor,
        patch_size: int,
        seed: int = 0,
        max_images: int = 8,
    ):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.images = images
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.max_images = int(max_images)
        self._writer = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import tensorflow as tf

        outputs = seeded_predict_outputs(self.model, self.images, self.seed)
        picture = mask_picture(
            self.images, outputs, self.patch_size,
            bool(getattr(self.model, "norm_pix_loss", False)), max_images=self.max_images,
        )
        with self._writer.as_default():
            tf.summary.image("masks", picture[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
