"""The NaN guard: `StopOnNonFiniteLoss` stops a run whose loss became NaN or
infinite and names the checkpoint to train on from; `nan_advice` is the fix
a pretraining run reports (the flags of a rerun with a lower learning
rate)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from keras_ccmim.training.callbacks import DEFAULT_CHECK_EVERY_STEPS, PeriodicCallback

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """Training stopped because the loss became NaN or infinite."""



def default_nan_advice(step: int | None) -> str:
    """What to do after the loss became NaN, for `fit_resumable` callers;
    `step` is the checkpoint to train on from (None: start over)."""
    restart = (f"train on from step {step} (resume_from_step={step})" if step is not None
               else "start over (fresh=True)")
    return (f"Lower the learning rate, lengthen the warmup or train in float32, and "
            f"{restart}.")


# Not TerminateOnNaN, which only stops: this names the kept healthy checkpoint and the fix.
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
        checkpoint: optional `TrainingCheckpoint` of the run, whose healthy
            and newest checkpoints the message names.
        advice: optional `advice(step) -> str`, the fix to report, given the
            step of the checkpoint to train on from (None when there is
            none); default `default_nan_advice`.
        check_every_steps: int >= 1, steps between two reads of the loss.
    """

    def __init__(
        self,
        checkpoint: Any = None,
        advice: Callable[[int | None], str] | None = None,
        check_every_steps: int = DEFAULT_CHECK_EVERY_STEPS,
    ):
        if isinstance(check_every_steps, bool) or int(check_every_steps) < 1:
            raise ValueError(
                f"check_every_steps must be a positive integer, got {check_every_steps!r}.")
        super().__init__(check_every_steps)
        self.checkpoint = checkpoint
        self.advice = advice or default_nan_advice
        self.failure = None
        self.resume_step = None
        self._checked = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self.failure = None
        self._checked = self._step

    def on_period_end(
        self, step: int, batches: int, logs: dict[str, Any], epoch_end: bool
    ) -> None:
        loss = logs.get("loss")
        last_checked, self._checked = self._checked, step
        if loss is None or math.isfinite(loss):
            return
        newest = good = None
        if self.checkpoint is not None:
            newest, good = self.checkpoint.newest(), self.checkpoint.good
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
        logger.error("\n%s", self.failure)
        raise NonFiniteLossError(self.failure)


# The blr the NaN advice falls back to for a run whose blr is over ten times
# larger: the demo recipe's (`keras_ccmim/recipes/demo.py`), which small runs train at
# (the paper's 1.5e-4 is for batches of thousands).
NAN_ADVICE_BLR = 1.5e-3


def nan_advice(config, step):
    """The fix a pretraining run reports when its loss became NaN: the flags
    of a rerun that trains on from checkpoint `step` (None: from scratch)
    with a lower learning rate, and the other knobs that help."""
    default = NAN_ADVICE_BLR
    lower = default if config.blr > 10 * default else config.blr / 10
    restart = f"--resume_from_step={step}" if step is not None else "--fresh"
    others = [f"a longer --config.warmup_epochs (now {config.warmup_epochs:g})"]
    if config.mixed_precision != "float32":
        others.append("float32 (--config.mixed_precision=float32)")
    return (
        f"To train on, rerun the same command with {restart} --config.blr={lower:g} (blr is "
        f"{config.blr:g}; the demo recipe's is {default:g}); {' or '.join(others)} also helps. "
        "In Python the config fields have the same names."
    )
