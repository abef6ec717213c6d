"""Full fine-tuning with layer-wise learning-rate decay (MAE's recipe).

`finetune(encoder, ..., output_dir=...)` checkpoints and resumes the way
pretraining does (`keras_ccmim.training.fit_resumable`). Its output folder:

    finetune_config.json   what the run trains (the recipe, the data, the
                           encoder's config and a digest of its weights)
    checkpoints/           resumable checkpoints (see TrainingCheckpoint)
    history.jsonl          one line per epoch: mean training loss, top-1 /
                           top-5 on the evaluation split
    classifier.keras       the fine-tuned `ViTClassifier` (Keras format;
                           `keras.saving.load_model` loads it, safe_mode on)
    results.json           what `FinetuneResult.to_dict` gives

Calling it again with the same arguments and folder resumes from the newest
intact checkpoint (the batches and random draws are those an uninterrupted
run would have had), or, once finished, only rewrites the outputs. Other
arguments (any outside `RESUMABLE_CHANGES`) are refused with the changed
fields named, unless `fresh=True`, which moves the earlier run's files to
`previous-<n>/` first. Nothing is deleted but old checkpoints the run wrote
itself (`keep_checkpoints`).
"""

import dataclasses
import functools
import hashlib
import json
import math
import os

import keras
import numpy as np
from keras import ops

from keras_ccmim.evaluation.features import whole_batch_size
from keras_ccmim.evaluation.metrics import accuracies
from keras_ccmim.models.vit_classifier import ViTClassifier
from keras_ccmim.run_files import move_aside, write_json_atomically
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.periodic import DEFAULT_CHECK_EVERY_STEPS
from keras_ccmim.training.config import describe_changes
from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
from keras_ccmim.training.resume import fit_resumable

CONFIG_FILE = "finetune_config.json"
HISTORY_FILE = "history.jsonl"
CLASSIFIER_FILE = "classifier.keras"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
# What a run writes in its output folder; `fresh=True` moves these aside.
RUN_OUTPUTS = (CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, CLASSIFIER_FILE, RESULTS_FILE)
# Arguments that may change between the calls on one run: they change where
# the data are read from or how often the host looks, not what is trained.
RESUMABLE_CHANGES = (
    "data_dir", "verbose", "checkpoint_every_steps", "keep_checkpoints", "check_every_steps",
)


def finetune_encoder(encoder, drop_path_rate=0.1):
    """A copy of `encoder` with its weights and the given stochastic depth."""
    config = encoder.get_config()
    config["drop_path_rate"] = float(drop_path_rate)
    copy = ViTEncoder.from_config(config)
    copy.build()
    copy.set_weights(encoder.get_weights())
    return copy


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` returns: accuracies in percent, what was run, the model.

    Attributes:
        top1, top5, num_eval: the final classifier on the evaluation split.
        epochs, steps, learning_rate: the run's length and peak lr.
        final_loss: mean training loss of the last epoch (of its steps run
            in the last call, for an epoch a resume finished).
        best_epoch: the epoch (1-based) of the best evaluation top-1 (the
            first of equals), `best_top1` and `best_top5` its accuracies;
            None when no epoch was recorded.
        history: per-epoch lists `epoch` (1-based), `loss`, `val_top1`,
            `val_top5`, over the whole run (earlier calls included).
        global_step, initial_step: steps done in all, and where this call
            started (0 for a fresh run).
        output_dir: the run's folder (None: not checkpointed, nothing
            written); `paths` maps output names to files in it.
        model: the fine-tuned `ViTClassifier`.
    """

    top1: float
    top5: float
    num_eval: int
    epochs: int
    steps: int
    learning_rate: float
    final_loss: float
    best_epoch: int
    best_top1: float
    best_top5: float
    history: dict
    global_step: int
    initial_step: int
    model: keras.Model = dataclasses.field(repr=False)
    output_dir: str = None
    paths: dict = None

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}


class FinetuneConfigError(ValueError):
    """An output folder that holds another fine-tuning run, or one that
    cannot be checked; the message names the differences and the fix."""


def evaluate_classifier(model, dataset, max_batches=None):
    """Top-1/top-5 (percent) and `num_eval` of a classifier over
    `(images, extras)` batches."""
    scores, labels = [], []
    for index, (images, extras) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        logits = model.predict_on_batch(np.asarray(images, dtype="float32"))
        scores.append(ops.convert_to_numpy(logits))
        labels.append(np.asarray(extras["label"]).reshape(-1))
    if not scores:
        raise ValueError("The evaluation dataset yielded no batch.")
    labels = np.concatenate(labels)
    if labels.min() < 0:
        raise ValueError("The evaluation split is unlabelled (label -1).")
    result = accuracies(np.concatenate(scores), labels)
    result["num_eval"] = int(labels.shape[0])
    return result


def _float_or_none(value):
    if value is None:
        return None
    return float(np.asarray(ops.convert_to_numpy(value)).reshape(()))


class EpochValidation(keras.callbacks.Callback):
    """Evaluates the classifier on the evaluation batches at each epoch end.

    Adds `val_top1` and `val_top5` (percent) to the epoch `logs`, keeps one
    record per epoch in `records` (`epoch`, 1-based, `global_step`, `loss`,
    `val_top1`, `val_top5`) and, with `history_path`, appends it there as a
    JSON line. It acts at epoch ends only (no `on_train_batch_*`), so it
    adds no host sync to the training steps. Put it before the callbacks
    that write `logs` and before `TrainingCheckpoint` (`fit_resumable` puts
    its `callbacks` there), so a checkpoint at an epoch end comes after the
    epoch's record.

    Args:
        dataset: the evaluation batches `(images, extras)` (re-read each
            epoch).
        history_path: optional JSON-lines file to append the records to.
    """

    def __init__(self, dataset, history_path=None):
        super().__init__()
        self.dataset = dataset
        self.history_path = history_path
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        result = evaluate_classifier(self.model, self.dataset)
        record = {
            "epoch": int(epoch) + 1,
            "global_step": int(ops.convert_to_numpy(self.model.optimizer.iterations)),
            "loss": _float_or_none((logs or {}).get("loss")),
            "val_top1": float(result["top1"]),
            "val_top5": float(result["top5"]),
        }
        if logs is not None:
            logs.update(val_top1=record["val_top1"], val_top5=record["val_top5"])
        self.records.append(record)
        if self.history_path:
            with open(self.history_path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())


def _read_history(path):
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


HISTORY_KEYS = ("epoch", "loss", "val_top1", "val_top5")


def _history_lists(records, last_epoch):
    """Per-epoch lists of `HISTORY_KEYS` over epochs 1..`last_epoch`."""
    epochs = sorted(e for e in records if 1 <= e <= last_epoch)
    return {key: [records[e].get(key) for e in epochs] for key in HISTORY_KEYS}


def best_epoch(history):
    """`(epoch, top1, top5)` of the highest `val_top1` in `history` (the
    first of equals), or `(None, None, None)` for an empty history."""
    top1 = history.get("val_top1") or []
    if not top1:
        return None, None, None
    index = int(np.argmax(np.asarray(top1, dtype="float64")))
    return history["epoch"][index], top1[index], history["val_top5"][index]


def encoder_digest(encoder):
    """A sha256 (hex, 16 digits) of an encoder's weights, shapes and order
    (its `SeedGenerator` states left out): two encoders with the same digest
    start the same fine-tuning."""
    digest = hashlib.sha256()
    for weight in encoder.get_weights():
        weight = np.ascontiguousarray(weight)
        digest.update(f"{weight.dtype}{weight.shape}".encode())
        digest.update(weight.tobytes())
    return digest.hexdigest()[:16]


def _flat_changes(saved, config):
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


def _prepare_output_dir(output_dir, config, fresh, config_file=CONFIG_FILE,
                        outputs=RUN_OUTPUTS, what="fine-tuning"):
    """Creates the run's folder and writes its config. A folder that holds
    an earlier run's outputs must hold the same run (the same `config` but
    for `RESUMABLE_CHANGES`), which then resumes; with `fresh` those outputs
    are moved aside first. `config_file`, `outputs` and `what` name the
    files of another kind of run (segmentation) and the run in messages."""
    output_dir = os.fspath(output_dir)
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise FinetuneConfigError(
            f"output_dir {output_dir!r} is a file; pass a folder (created if missing)."
        )
    config_path = os.path.join(output_dir, config_file)
    if fresh:
        aside = move_aside(output_dir, outputs)
        if aside is not None:
            print(f"Starting afresh (fresh=True): the earlier run's outputs are kept in {aside}.")
    else:
        present = [n for n in outputs if os.path.lexists(os.path.join(output_dir, n))]
        if present and not os.path.exists(config_path):
            raise FinetuneConfigError(
                f"output_dir {output_dir!r} holds {', '.join(present)} of an earlier "
                f"{what} but no {config_file}, so that run cannot be checked against "
                f"this configuration. Restore the file, or {_FRESH_FIX}."
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
            changes = _flat_changes(saved, config)
            if changes:
                raise FinetuneConfigError(
                    f"output_dir {output_dir!r} holds a {what} run with a different "
                    f"configuration: {describe_changes(changes)}. Rerun with the same "
                    f"settings to resume it, or {_FRESH_FIX}."
                )
    checkpoint_dir = os.path.join(output_dir, CHECKPOINT_DIR)
    os.makedirs(checkpoint_dir, exist_ok=True)
    write_json_atomically(config_path, config)
    return output_dir, checkpoint_dir


def save_classifier(model, path):
    """Saves `model` in the Keras format at `path` (written beside it, then
    moved into place, so a kill leaves the old file or the new one)."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def _check_count(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")


def finetune(
    encoder,
    dataset="synthetic_objects",
    *,
    train_split="train",
    eval_split="test",
    data_dir=None,
    image_size=None,
    num_classes=None,
    train_num_images=None,
    eval_num_images=None,
    epochs=100,
    steps_per_epoch=None,
    warmup_epochs=5,
    batch_size=128,
    base_learning_rate=5e-4,
    weight_decay=0.05,
    layer_decay=0.65,
    drop_path_rate=0.1,
    rand_augment_magnitude=9,
    random_erasing_probability=0.25,
    mixup_alpha=0.8,
    cutmix_alpha=1.0,
    label_smoothing=0.1,
    seed=0,
    verbose=0,
    output_dir=None,
    fresh=False,
    checkpoint_every_steps=0,
    keep_checkpoints=2,
    check_every_steps=DEFAULT_CHECK_EVERY_STEPS,
    callbacks=(),
):
    """Fine-tunes a copy of `encoder` end to end and evaluates it each epoch.

    MAE / ccMIM's recipe by default: AdamW (betas 0.9, 0.999), `lr =
    base_learning_rate * batch_size / 256` with linear warmup then cosine to
    0, layer-wise lr decay 0.65, drop path 0.1, RandAugment m9, random
    erasing 0.25, MixUp 0.8 / CutMix 1.0, label smoothing 0.1, mean-pooled
    patch tokens + final norm + linear head (`ViTClassifier`).

    With `output_dir` the run is checkpointed and resumable, and its outputs
    are written there (see the module docstring): the classifier goes to
    `<output_dir>/classifier.keras`. The training batches are a function of
    `seed` and the step (`make_finetune_dataset(..., start_batch=step)`), so
    a resumed run trains on what an uninterrupted one would have. The
    evaluation split is scored at each epoch end (no host sync during the
    epoch); the best epoch is reported beside the final accuracies.

    Args:
        encoder: the pretrained `ViTEncoder` (not modified; a copy is trained).
        dataset, data_dir: as in `keras_ccmim.data.make_dataset`.
        train_split, eval_split: split strings (TFDS slicing allowed).
        image_size: default the encoder's.
        num_classes: default from the dataset description.
        train_num_images, eval_num_images: `num_images` of each split.
        epochs, steps_per_epoch: training length (steps default: one pass).
        warmup_epochs, batch_size, base_learning_rate, weight_decay,
        layer_decay, drop_path_rate, rand_augment_magnitude,
        random_erasing_probability, mixup_alpha, cutmix_alpha,
        label_smoothing: the recipe.
        seed: seeds initialisation, data order and augmentation.
        verbose: `fit` verbosity.
        output_dir: optional folder of the run (created); None trains in
            memory: no checkpoint, nothing written.
        fresh: with `output_dir`, start over even where it holds an earlier
            run (whose files are moved to `previous-<n>/`).
        checkpoint_every_steps: int >= 0, also checkpoint every this many
            steps (0: at epoch ends only).
        keep_checkpoints: int >= 1, checkpoints kept.
        check_every_steps: int >= 1, steps between two reads of the loss
            (NaN guard).
        callbacks: more Keras callbacks, run after the epoch validation and
            before the checkpoint.

    Returns:
        A `FinetuneResult`.

    Raises:
        FinetuneConfigError: `output_dir` holds a run with other arguments
            (or one whose config cannot be read), without `fresh`.
        NonFiniteLossError: the loss became NaN or infinite.
    """
    from keras_ccmim.data import describe_dataset, make_dataset
    from keras_ccmim.evaluation.finetune_data import check_augmentation, make_finetune_dataset

    image_size = int(image_size or encoder.image_size[0])
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if not 0 <= float(warmup_epochs) < int(epochs):
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}.")
    _check_count("checkpoint_every_steps", checkpoint_every_steps, 0)
    _check_count("keep_checkpoints", keep_checkpoints, 1)
    _check_count("check_every_steps", check_every_steps, 1)
    if not isinstance(fresh, bool):
        raise ValueError(f"fresh must be True or False, got {fresh!r}.")
    info = describe_dataset(
        dataset,
        split=train_split,
        data_dir=data_dir,
        num_images=train_num_images,
        image_size=image_size,
    )
    if num_classes is None:
        num_classes = info.num_classes
    if num_classes is None:
        raise ValueError(
            f"{dataset!r} split {train_split!r} is unlabelled; fine-tuning needs labels "
            "(or pass num_classes for a labelled source of unknown size)."
        )
    if steps_per_epoch is None:
        if not info.num_images:
            raise ValueError("The training split's size is unknown; pass steps_per_epoch.")
        steps_per_epoch = max(info.num_images // int(batch_size), 1)
    epochs, steps_per_epoch, batch_size = int(epochs), int(steps_per_epoch), int(batch_size)
    recipe = dict(
        warmup_epochs=float(warmup_epochs),
        base_learning_rate=float(base_learning_rate),
        weight_decay=float(weight_decay),
        layer_decay=float(layer_decay),
        drop_path_rate=float(drop_path_rate),
        rand_augment_magnitude=float(rand_augment_magnitude),
        random_erasing_probability=float(random_erasing_probability),
        mixup_alpha=float(mixup_alpha),
        cutmix_alpha=float(cutmix_alpha),
        label_smoothing=float(label_smoothing),
    )
    check_augmentation(
        recipe["rand_augment_magnitude"], recipe["random_erasing_probability"],
        recipe["mixup_alpha"], recipe["cutmix_alpha"], recipe["label_smoothing"],
    )

    config = None
    if output_dir is not None:
        encoder_config = {
            k: v for k, v in encoder.get_config().items() if k not in ("name", "trainable")
        }
        config = dict(
            dataset=dataset, train_split=train_split, eval_split=eval_split,
            data_dir=data_dir, image_size=image_size, num_classes=int(num_classes),
            train_num_images=train_num_images, eval_num_images=eval_num_images,
            epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            **recipe, seed=int(seed), encoder=encoder_config,
            encoder_weights=encoder_digest(encoder), verbose=verbose,
            checkpoint_every_steps=int(checkpoint_every_steps),
            keep_checkpoints=int(keep_checkpoints), check_every_steps=int(check_every_steps),
        )
        config = json.loads(json.dumps(config))  # as read back from the file
    keras.utils.set_random_seed(int(seed))

    train = functools.partial(
        make_finetune_dataset,
        dataset,
        split=train_split,
        batch_size=batch_size,
        image_size=image_size,
        num_classes=int(num_classes),
        data_dir=data_dir,
        seed=int(seed),
        num_images=train_num_images,
        rand_augment_magnitude=recipe["rand_augment_magnitude"],
        random_erasing_probability=recipe["random_erasing_probability"],
        mixup_alpha=recipe["mixup_alpha"],
        cutmix_alpha=recipe["cutmix_alpha"],
        label_smoothing=recipe["label_smoothing"],
    )

    def dataset_at(step):
        return train(start_batch=step)

    eval_info = describe_dataset(
        dataset,
        split=eval_split,
        data_dir=data_dir,
        num_images=eval_num_images,
        image_size=image_size,
    )
    evaluation = make_dataset(
        dataset,
        split=eval_split,
        batch_size=whole_batch_size(eval_info.num_images, batch_size),
        image_size=image_size,
        data_dir=data_dir,
        training=False,
        num_images=eval_num_images,
    )

    model = ViTClassifier(finetune_encoder(encoder, drop_path_rate), int(num_classes))
    model.build()
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(int(round(recipe["warmup_epochs"] * steps_per_epoch)), total_steps - 1)
    learning_rate = recipe["base_learning_rate"] * batch_size / 256.0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    optimizer = LayerDecayAdamW(
        schedule, lr_scales=layer_decay_scales(model, layer_decay), weight_decay=weight_decay
    )
    model.compile(
        optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True)
    )
    advice = functools.partial(_nan_advice, recipe["base_learning_rate"],
                               recipe["warmup_epochs"])
    # The folder is prepared once everything that checks the arguments ran.
    checkpoint_dir = history_path = None
    if output_dir is not None:
        output_dir, checkpoint_dir = _prepare_output_dir(output_dir, config, fresh)
        history_path = os.path.join(output_dir, HISTORY_FILE)
    validation = EpochValidation(evaluation, history_path=history_path)
    if output_dir is None:
        guard = StopOnNonFiniteLoss(advice=advice, check_every_steps=check_every_steps)
        model.fit(
            dataset_at(0), epochs=epochs, steps_per_epoch=steps_per_epoch,
            callbacks=[guard, validation, *callbacks], verbose=verbose, shuffle=False,
        )
        if guard.failure:
            raise NonFiniteLossError(guard.failure)
        initial_step = 0
        records = {r["epoch"]: r for r in validation.records}
    else:
        _, initial_step = fit_resumable(
            model,
            dataset_at,
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
        records = _read_history(history_path)
    global_step = int(ops.convert_to_numpy(model.optimizer.iterations))
    history = _history_lists(records, global_step // steps_per_epoch)
    best = best_epoch(history)
    result = evaluate_classifier(model, evaluation)
    losses = [v for v in history["loss"] if v is not None] or [math.nan]
    paths = None
    if output_dir is not None:
        paths = {
            "config": os.path.join(output_dir, CONFIG_FILE),
            "checkpoints": checkpoint_dir,
            "history": history_path,
            "classifier": save_classifier(model, os.path.join(output_dir, CLASSIFIER_FILE)),
            "results": os.path.join(output_dir, RESULTS_FILE),
        }
    results = FinetuneResult(
        top1=result["top1"],
        top5=result["top5"],
        num_eval=result["num_eval"],
        epochs=epochs,
        steps=total_steps,
        learning_rate=learning_rate,
        final_loss=float(losses[-1]),
        best_epoch=best[0],
        best_top1=best[1],
        best_top5=best[2],
        history=history,
        global_step=global_step,
        initial_step=initial_step,
        model=model,
        output_dir=output_dir,
        paths=paths,
    )
    if paths is not None:
        write_json_atomically(paths["results"], results.to_dict())
    print(finetune_summary(results))
    return results


def finetune_summary(result):
    """One line: the final and the best epoch's accuracies, where the
    classifier went."""
    best = "n/a"
    if result.best_epoch is not None:
        best = (f"{result.best_top1:.2f} (top-5 {result.best_top5:.2f}) at epoch "
                f"{result.best_epoch} of {result.epochs}")
    saved = ""
    if result.paths:
        saved = f" Classifier saved to {result.paths['classifier']}."
    return (
        f"Fine-tuned for {result.global_step} steps: final top-1 {result.top1:.2f} (top-5 "
        f"{result.top5:.2f}) on {result.num_eval} images; best top-1 {best}.{saved}"
    )


def _nan_advice(blr, warmup_epochs, step):
    """The fix printed when the fine-tuning loss became NaN."""
    return (
        f"Lower the base learning rate (--blr / base_learning_rate, now {blr:g}) or "
        f"lengthen the warmup (--warmup_epochs, now {warmup_epochs:g}), and start over: "
        "pass --fresh (fresh=True; the earlier files are moved to previous-<n>/) or a new "
        "--output_dir."
    )
