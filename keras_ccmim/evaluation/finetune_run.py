"""One fine-tuning run of an encoder, whatever model sits on it: the run
that `finetune` (a classifier) and `finetune_segmenter` (a segmenter) share.

`run_finetuning(task, encoder, ...)` sets the seed, builds the task's model,
compiles it (AdamW with layer-wise lr decay, linear warmup then cosine to
0), trains it, scores it on the evaluation split at each epoch end (no host
sync during an epoch) and finds the best epoch. A `FinetuneTask` brings
what differs: the model and its loss, the training batches, the scores, the
file names and the learning-rate rule.

With `output_dir` the run is checkpointed and resumable
(`keras_ccmim.training.fit_resumable`), and its folder holds:

    <task.config_file>   what the run trains (the recipe, the data, the
                         encoder's config and a digest of its weights)
    checkpoints/         resumable checkpoints (see TrainingCheckpoint)
    history.jsonl        one line per epoch: the mean training loss and
                         the scores on the evaluation split
    <task.model_file>    the fine-tuned model (Keras format;
                         `keras.saving.load_model` loads it, safe_mode on)
    results.json         the task's result (`FinetuneRun.write`)

Calling it again with the same arguments and folder resumes from the newest
intact checkpoint (the batches and random draws are those an uninterrupted
run would have had), or, once finished, only rewrites the outputs. Other
arguments (any outside `RESUMABLE_CHANGES`) are refused with the changed
fields named (`FinetuneConfigError`), unless `fresh=True`, which moves the
earlier run's files to `previous-<n>/` first. Nothing is deleted but old
checkpoints the run wrote itself (`keep_checkpoints`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import keras
import numpy as np
from keras import ops

from keras_ccmim.file_io import append_json_line, move_aside, write_json_atomically
from keras_ccmim.training.checkpoints import fit_resumable
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
from keras_ccmim.training.workdir import describe_changes
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
# Arguments that may change between the calls on one run: they change where
# the data are read from or how often the host looks, not what is trained.
RESUMABLE_CHANGES = (
    "data_dir", "verbose", "checkpoint_every_steps", "keep_checkpoints", "check_every_steps",
)


class FinetuneConfigError(ValueError):
    """An output folder that holds another fine-tuning run, or one that
    cannot be checked; the message names the differences and the fix."""


@dataclasses.dataclass(frozen=True)
class FinetuneTask:
    """What one kind of fine-tuning brings to `run_finetuning`.

    Attributes:
        what: the run in messages ("fine-tuning", "segmentation").
        config_file, model_file: the names of its config and of the
            fine-tuned model in the run's folder.
        model_name: the model's key in `FinetuneRun.paths`.
        extra_outputs: other files the task writes in the folder (moved
            aside with the rest by `fresh`).
        added_fields: config fields added after earlier versions wrote
            their configs, with the value those runs had (see
            `prepare_output_dir`).
        lr_batch_size: `lr = base_learning_rate * batch_size / lr_batch_size`.
        build_model: `() -> model`, built; called once the seed is set.
        loss: the Keras loss it is compiled with.
        train_at: `step -> dataset`, the training batches from global step
            `step` on (a resumed run's are an uninterrupted run's).
        score: `model -> {name: float}`, the scores on the evaluation split.
        score_names: the scores recorded each epoch (as `val_<name>`); the
            first picks the best epoch.
    """

    what: str
    config_file: str
    model_file: str
    model_name: str
    lr_batch_size: int
    build_model: Callable[[], keras.Model]
    loss: keras.losses.Loss
    train_at: Callable[[int], Any]
    score: Callable[[keras.Model], dict[str, float]]
    score_names: tuple[str, ...]
    extra_outputs: tuple[str, ...] = ()
    added_fields: dict[str, Any] | None = None

    @property
    def outputs(self) -> tuple[str, ...]:
        """What the run writes in its folder; `fresh=True` moves these aside."""
        return (CHECKPOINT_DIR, self.config_file, HISTORY_FILE, self.model_file,
                *self.extra_outputs, RESULTS_FILE)

    @property
    def history_keys(self) -> tuple[str, ...]:
        return ("epoch", "loss", *(f"val_{name}" for name in self.score_names))


def check_count(name: str, value: Any, low: int) -> None:
    """Raises a ValueError naming `name` unless `value` is an int >= `low`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def check_run_arguments(
    *,
    epochs: int,
    batch_size: int,
    warmup_epochs: float,
    fresh: bool,
    checkpoint_every_steps: int,
    keep_checkpoints: int,
    check_every_steps: int,
) -> None:
    """The checks of the arguments every fine-tuning run takes, before any
    work."""
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if not 0 <= float(warmup_epochs) < int(epochs):
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}.")
    check_count("checkpoint_every_steps", checkpoint_every_steps, 0)
    check_count("keep_checkpoints", keep_checkpoints, 1)
    check_count("check_every_steps", check_every_steps, 1)
    if not isinstance(fresh, bool):
        raise ValueError(f"fresh must be True or False, got {fresh!r}.")


def nan_advice(base_learning_rate: float, warmup_epochs: float, step: int | None) -> str:
    """The fix printed when the fine-tuning loss became NaN."""
    return (
        f"Lower the base learning rate (--blr / base_learning_rate, now "
        f"{base_learning_rate:g}) or lengthen the warmup (--warmup_epochs, now "
        f"{warmup_epochs:g}), and start over: pass --fresh (fresh=True; the earlier files "
        "are moved to previous-<n>/) or a new --output_dir."
    )


def encoder_digest(encoder: keras.Model) -> str:
    """A sha256 (hex, 16 digits) of an encoder's weights, shapes and order
    (its `SeedGenerator` states left out): two encoders with the same digest
    start the same fine-tuning."""
    digest = hashlib.sha256()
    for weight in encoder.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def flat_changes(
    saved: Mapping[str, Any], config: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """`(field, old, new)` for each field (one level of dicts flattened to
    `outer.inner`) outside `RESUMABLE_CHANGES` that differs."""

    def flat(mapping):
        items = {}
        for key, value in mapping.items():
            if isinstance(value, dict):
                items.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                items[key] = value
        return items

    old, new = flat(saved), flat(config)
    names = list(new) + [name for name in old if name not in new]
    return [
        (name, old.get(name), new.get(name))
        for name in names
        if name not in RESUMABLE_CHANGES and old.get(name) != new.get(name)
    ]


_FRESH_FIX = (
    "pass --fresh (fresh=True) to start over (the earlier files are moved to "
    "previous-<n>/, nothing is deleted), or pass a new --output_dir (output_dir)"
)


def prepare_output_dir(
    output_dir: PathLike, config: dict[str, Any], fresh: bool, task: FinetuneTask
) -> tuple[str, str]:
    """Creates the run's folder and writes its config (`task.config_file`).
    A folder that holds an earlier run's outputs (`task.outputs`) must hold
    the same run (the same `config` but for `RESUMABLE_CHANGES`), which then
    resumes; with `fresh` those outputs are moved aside first. A saved
    config without one of `task.added_fields` is read as having the value
    given there. Returns `(output_dir, checkpoint_dir)`."""
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FinetuneConfigError(
            f"output_dir {output_dir!r} is a file; pass a folder (created if missing)."
        )
    config_path = os.path.join(output_dir, task.config_file)
    if fresh:
        aside = move_aside(output_dir, task.outputs)
        if aside is not None:
            logger.info(
                "Starting afresh (fresh=True): the earlier run's outputs are kept in %s.", aside
            )
    else:
        present = [n for n in task.outputs if os.path.lexists(os.path.join(output_dir, n))]
        if present and not os.path.exists(config_path):
            raise FinetuneConfigError(
                f"output_dir {output_dir!r} holds {', '.join(present)} of an earlier "
                f"{task.what} but no {task.config_file}, so that run cannot be checked "
                f"against this configuration. Restore the file, or {_FRESH_FIX}."
            )
        if present:
            try:
                with open(config_path) as f:
                    saved = json.load(f)
                if not isinstance(saved, dict):
                    raise ValueError("not a JSON object")
            except (OSError, ValueError) as error:
                raise FinetuneConfigError(
                    f"{config_path} cannot be read ({error}), so the run in {output_dir!r} "
                    f"cannot be checked against this configuration. Restore the file, or "
                    f"{_FRESH_FIX}."
                ) from error
            changes = flat_changes(dict(task.added_fields or {}, **saved), config)
            if changes:
                raise FinetuneConfigError(
                    f"output_dir {output_dir!r} holds a {task.what} run with a different "
                    f"configuration: {describe_changes(changes)}. Rerun with the same "
                    f"settings to resume it, or {_FRESH_FIX}."
                )
    checkpoint_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    os.makedirs(checkpoint_dir, exist_ok=True)
    write_json_atomically(config_path, config)
    return output_dir, checkpoint_dir


def read_history(path: PathLike) -> dict[int, dict[str, Any]]:
    """`{epoch: record}` from a history file, the last record of each epoch
    (a resumed run appends the epochs it ran again); cut lines are skipped."""
    records = {}
    if not os.path.exists(path):
        return records
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int):
                records[record["epoch"]] = record
    return records


def save_model(model: keras.Model, path: str) -> str:
    """Saves `model` in the Keras format at `path` (written beside it, then
    moved into place, so a kill leaves the old file or the new one)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _float_or_none(value):
    if value is None:
        return None
    return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))


class EpochValidation(keras.callbacks.Callback):
    """Scores the model on the evaluation split at each epoch end.

    Adds `val_<name>` for each of `names` to the epoch `logs`, keeps one
    record per epoch in `records` (`epoch`, 1-based, `global_step`, `loss`
    and the `val_<name>` scores) and, with `history_path`, appends it there
    as a JSON line. It acts at epoch ends only (no `on_train_batch_*`), so
    it adds no host sync to the training steps. Put it before the callbacks
    that write `logs` and before `TrainingCheckpoint` (`fit_resumable` puts
    its `callbacks` there), so a checkpoint at an epoch end comes after the
    epoch's record.

    Args:
        score: `model -> {name: float}` on the evaluation split.
        names: the scores recorded.
        history_path: optional JSON-lines file to append the records to.
    """

    def __init__(
        self,
        score: Callable[[keras.Model], dict[str, float]],
        names: Sequence[str],
        history_path: PathLike | None = None,
    ):
        super().__init__()
        self.score = score
        self.names = tuple(names)
        self.history_path = history_path
        self.records = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        scores = self.score(self.model)
        values = {f"val_{name}": float(scores[name]) for name in self.names}
        record = {
            "epoch": int(epoch) + 1,
            "global_step": int(ops.convert_to_numpy(self.model.optimizer.iterations)),
            "loss": _float_or_none((logs or {}).get("loss")),
            **values,
        }
        if logs is not None:
            logs.update(values)
        self.records.append(record)
        if self.history_path:
            append_json_line(self.history_path, record)


# `FinetuneRun.from_run` gives the class it is called on.
_Run = TypeVar("_Run", bound="FinetuneRun")


@dataclasses.dataclass(kw_only=True)
class FinetuneRun:
    """What a fine-tuning run gives back, whatever its task; a task's result
    (`FinetuneResult`, `SegmentationResult`) adds its final scores.

    Attributes:
        epochs, steps, learning_rate: the run's length and peak lr.
        final_loss: mean training loss of the last epoch (of its steps run
            in the last call, for an epoch a resume finished).
        best_epoch: the epoch (1-based) of the best first score (the first
            of equals); None when no epoch was recorded.
        history: per-epoch lists `epoch` (1-based), `loss` and the
            `val_<score>` of the task, over the whole run (earlier calls
            included).
        global_step, initial_step: steps done in all, and where this call
            started (0 for a fresh run).
        model: the fine-tuned model.
        output_dir: the run's folder (None: not checkpointed, nothing
            written); `paths` maps output names to files in it.
    """

    epochs: int
    steps: int
    learning_rate: float
    final_loss: float
    best_epoch: int | None
    history: dict[str, list]
    global_step: int
    initial_step: int
    model: keras.Model = dataclasses.field(repr=False)
    output_dir: str | None = None
    paths: dict[str, str] | None = None

    @classmethod
    def from_run(cls: type[_Run], run: FinetuneRun, **scores: Any) -> _Run:
        """A task's result: the fields of `run` and the task's `scores`."""
        return cls(**{f.name: getattr(run, f.name) for f in dataclasses.fields(FinetuneRun)},
                   **scores)

    def best(self, key: str) -> float | None:
        """`history[key]` at the best epoch (None when there is none)."""
        if self.best_epoch is None:
            return None
        return self.history[key][self.history["epoch"].index(self.best_epoch)]

    def to_dict(self) -> dict[str, Any]:
        """Every field but the model (copies)."""
        return {f.name: copy.deepcopy(getattr(self, f.name))
                for f in dataclasses.fields(self) if f.name != "model"}

    def write(self) -> None:
        """Writes `to_dict()` to results.json in the run's folder (when the
        run has one)."""
        if self.paths is not None:
            write_json_atomically(self.paths["results"], self.to_dict())


def run_finetuning(
    task: FinetuneTask,
    encoder: keras.Model,
    *,
    data: dict[str, Any],
    recipe: dict[str, Any],
    epochs: int,
    steps_per_epoch: int,
    batch_size: int,
    seed: int,
    verbose: str | int,
    output_dir: PathLike | None,
    fresh: bool,
    checkpoint_every_steps: int,
    keep_checkpoints: int,
    check_every_steps: int,
    callbacks: Sequence[keras.callbacks.Callback],
) -> FinetuneRun:
    """Trains `task`'s model (see the module docstring); the arguments have
    been checked (`check_run_arguments`).

    Args:
        task: a `FinetuneTask`.
        encoder: the encoder the model copies (its config and a digest of
            its weights go into the run's config).
        data: the data fields of the run's config (dataset, splits, sizes).
        recipe: the recipe fields of the run's config; `run_finetuning`
            reads `warmup_epochs`, `base_learning_rate`, `weight_decay` and
            `layer_decay` from it.
        epochs, steps_per_epoch, batch_size, seed: ints.
        verbose: `fit` verbosity.
        output_dir, fresh, checkpoint_every_steps, keep_checkpoints,
        check_every_steps, callbacks: as in `finetune`.

    Returns:
        A `FinetuneRun`; with `output_dir`, the model is saved in it (its
        task writes results.json: `FinetuneRun.write`).

    Raises:
        FinetuneConfigError: `output_dir` holds another run, without `fresh`.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    config = None
    if output_dir is not None:
        encoder_config = {
            k: v for k, v in encoder.get_config().items() if k not in ("name", "trainable")
        }
        config = dict(
            **data, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            **recipe, seed=int(seed), encoder=encoder_config,
            encoder_weights=encoder_digest(encoder), verbose=verbose,
            checkpoint_every_steps=int(checkpoint_every_steps),
            keep_checkpoints=int(keep_checkpoints), check_every_steps=int(check_every_steps),
        )
        config = json.loads(json.dumps(config))  # as read back from the file
    keras.utils.set_random_seed(int(seed))
    model = task.build_model()
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(int(round(recipe["warmup_epochs"] * steps_per_epoch)), total_steps - 1)
    learning_rate = recipe["base_learning_rate"] * batch_size / float(task.lr_batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = LayerDecayAdamW(
        schedule, lr_scales=layer_decay_scales(model, recipe["layer_decay"]),
        weight_decay=recipe["weight_decay"],
    )
    model.compile(optimizer=optimizer, loss=task.loss)

    def advice(step):
        return nan_advice(recipe["base_learning_rate"], recipe["warmup_epochs"], step)

    # The folder is prepared once everything that checks the arguments ran.
    checkpoint_dir = history_path = None
    if output_dir is not None:
        output_dir, checkpoint_dir = prepare_output_dir(output_dir, config, fresh, task)
        history_path = os.path.join(output_dir, HISTORY_FILE)
    validation = EpochValidation(task.score, task.score_names, history_path=history_path)
    if output_dir is None:
        guard = StopOnNonFiniteLoss(advice=advice, check_every_steps=check_every_steps)
        model.fit(
            task.train_at(0), epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[guard, validation, *callbacks], verbose=verbose, shuffle=False,
        )
        if guard.failure:
            raise NonFiniteLossError(guard.failure)
        initial_step = 0
        records = {r["epoch"]: r for r in validation.records}
    else:
        _, initial_step = fit_resumable(
            model,
            task.train_at,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            checkpoint_dir=checkpoint_dir,
            callbacks=[validation, *callbacks],
            save_every_steps=checkpoint_every_steps,
            max_to_keep=keep_checkpoints,
            verbose=verbose,
            nan_advice=advice,
            check_every_steps=check_every_steps,
        )
        records = read_history(history_path)
    global_step = int(ops.convert_to_numpy(model.optimizer.iterations))
    epochs_done = sorted(e for e in records if 1 <= e <= global_step // steps_per_epoch)
    history = {key: [records[e].get(key) for e in epochs_done] for key in task.history_keys}
    first_scores = history[f"val_{task.score_names[0]}"]
    best_epoch = None
    if first_scores:
        best_epoch = history["epoch"][int(np.argmax(np.asarray(first_scores, dtype="float64")))]
    losses = [v for v in history["loss"] if v is not None] or [math.nan]
    paths = None
    if output_dir is not None:
        paths = {
            "config": os.path.join(output_dir, task.config_file),
            "checkpoints": checkpoint_dir,
            "history": history_path,
            task.model_name: save_model(model, os.path.join(output_dir, task.model_file)),
            "results": os.path.join(output_dir, RESULTS_FILE),
        }
    return FinetuneRun(
        model=model, history=history, best_epoch=best_epoch, epochs=epochs, steps=total_steps,
        learning_rate=learning_rate, final_loss=float(losses[-1]), global_step=global_step,
        initial_step=initial_step, output_dir=output_dir, paths=paths,
    )
