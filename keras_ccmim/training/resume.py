"""`fit_resumable`: `model.fit` that continues a checkpointed run where it stopped."""

import logging

from keras_ccmim.training.checkpoint_files import roll_back_to_step
from keras_ccmim.training.checkpointing import TrainingCheckpoint
from keras_ccmim.training.distribution import barrier, is_primary
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.periodic import DEFAULT_CHECK_EVERY_STEPS

__all__ = ["NonFiniteLossError", "fit_resumable"]

logger = logging.getLogger(__name__)


def fit_resumable(
    model,
    dataset,
    *,
    epochs,
    steps_per_epoch,
    checkpoint_dir,
    callbacks=(),
    save_every_steps=0,
    max_to_keep=2,
    verbose="auto",
    resume_from_step=None,
    nan_advice=None,
    check_every_steps=DEFAULT_CHECK_EVERY_STEPS,
):
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
        checkpoint_dir, checkpoint=checkpoint, advice=nan_advice,
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
