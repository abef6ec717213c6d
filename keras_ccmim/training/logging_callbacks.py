"""Callbacks that log a run: `MetricsCSV`, `LogLearningRate`,
`TensorBoardScalars` and `TensorBoardMaskPictures`.

Order a run's callbacks as `fit_resumable` does: `StopOnNonFiniteLoss`
first, the callbacks that add entries to the epoch `logs` (`ForegroundLift`,
`LogLearningRate`) before the ones that write them (`MetricsCSV`,
`TensorBoardScalars`), and `TrainingCheckpoint` last.
"""

import os

import keras

from keras_ccmim.training.export import mask_picture_of_outputs
from keras_ccmim.training.foreground_lift import seeded_predict_outputs
from keras_ccmim.training.periodic import float_logs, iterations, to_float


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

    def __init__(self, log_dir, update_freq=0):
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

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._global_train_batch = self._written = iterations(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        # `_global_train_batch` counts the steps done before this one.
        step = self._global_train_batch
        if self._due(step):
            # The epoch's running means, as Keras's batch logs are.
            self._write_batch_scalars(step, float_logs(self.model.get_metrics_result()))
        super().on_train_batch_begin(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        step = self._global_train_batch = iterations(self.model)
        if self._due(step):
            self._write_batch_scalars(step, float_logs(logs))
        self._written = step
        super().on_epoch_end(epoch, logs)
        self._train_writer.flush()


class TensorBoardMaskPictures(keras.callbacks.Callback):
    """Writes, at each epoch end, the picture of the model's masks and
    reconstructions on a fixed batch (`keras_ccmim.training.export.mask_picture`:
    the images, their masked patches greyed out, the reconstruction (the
    decoder's masked patches pasted in) and, with importance masking, the
    importance heat map) as the TensorBoard image `masks` under
    `log_dir/train/`, indexed by epoch.

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
        max_images: columns drawn (the first images).
    """

    def __init__(self, log_dir, images, patch_size, seed=0, max_images=8):
        super().__init__()
        self.log_dir = os.fspath(log_dir)
        self.images = images
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.max_images = int(max_images)
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "train"))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        outputs = seeded_predict_outputs(self.model, self.images, self.seed)
        picture = mask_picture_of_outputs(
            self.images, outputs, self.patch_size, max_images=self.max_images,
            norm_pix_loss=bool(getattr(self.model, "norm_pix_loss", False)),
        )
        with self._writer.as_default():
            tf.summary.image("masks", picture[None], step=epoch)
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
