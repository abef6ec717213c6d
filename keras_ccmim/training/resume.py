"""`fit_resumable`: `model.fit` that continues a checkpointed run where it stopped."""

from keras_ccmim.training.callbacks import StopOnNonFiniteLoss, TrainingCheckpoint, roll_back_to_step


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""


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
):
    """Trains `model` for `epochs * steps_per_epoch` steps in total, resuming.

    If `checkpoint_dir` holds an intact checkpoint (see
    `TrainingCheckpoint.restore`), the
    model weights, the optimizer state and its `iterations` (so the learning
    rate schedule) are restored first and training continues at that global
    step: `epoch = step // steps_per_epoch`, and an epoch interrupted after
    `b` batches is finished with its remaining `steps_per_epoch - b` steps
    (a first `fit` call; its epoch logs average only those steps). The data
    are read from the start of `dataset` again, not from where the killed
    run was.

    Callbacks run in this order: `StopOnNonFiniteLoss`, `callbacks`,
    `TrainingCheckpoint`.

    Args:
        model: a compiled model.
        dataset: yields at least the remaining number of batches (e.g. a
            repeated `tf.data.Dataset`).
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
        checkpoint_dir, steps_per_epoch, save_every_steps=save_every_steps, max_to_keep=max_to_keep
    )
    guard = StopOnNonFiniteLoss(checkpoint_dir, checkpoint=checkpoint, advice=nan_advice)
    all_callbacks = [guard, *callbacks, checkpoint]
    if resume_from_step is not None:
        roll_back_to_step(checkpoint_dir, resume_from_step)
    initial_step = checkpoint.restore(model)
    total_steps = epochs * steps_per_epoch
    history = {}
    if initial_step >= total_steps:
        print(
            f"Checkpoint in {checkpoint_dir} is at step {initial_step} of {total_steps}: "
            "training already finished."
        )
        return history, initial_step
    epoch, batch = divmod(initial_step, steps_per_epoch)
    if initial_step:
        print(
            f"Resuming from the checkpoint in {checkpoint_dir} at step {initial_step} "
            f"(epoch {epoch + 1}, batch {batch} of {steps_per_epoch})."
        )
    phases = []
    if batch:
        phases.append((epoch, epoch + 1, steps_per_epoch - batch))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    for initial_epoch, end_epoch, steps in phases:
        result = model.fit(
            dataset,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps,
            callbacks=all_callbacks,
            shuffle=False,
            verbose=verbose,
        )
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)
        if guard.failure:
            raise NonFiniteLossError(guard.failure)
        if model.stop_training:
            break
    return history, initial_step
