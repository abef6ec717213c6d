"""Full fine-tuning of an encoder as a classifier, with layer-wise
learning-rate decay (MAE's recipe).

`finetune(encoder, ..., output_dir=...)` trains a `ViTClassifier` over a
copy of the encoder through the run every fine-tuning shares
(`keras_ccmim.evaluation.finetune_run`: checkpoints, resume, per-epoch
validation, the best epoch, `fresh`). Its output folder:

    finetune_config.json   what the run trains (the recipe, the data, the
                           encoder's config and a digest of its weights)
    checkpoints/           resumable checkpoints (see TrainingCheckpoint)
    history.jsonl          one line per epoch: mean training loss, top-1 /
                           top-5 on the evaluation split
    classifier.keras       the fine-tuned `ViTClassifier` (Keras format;
                           `keras.saving.load_model` loads it, safe_mode on)
    results.json           what `FinetuneResult.to_dict` gives
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_ccmim.evaluation.finetune_run import (
    FinetuneRun,
    FinetuneTask,
    check_run_arguments,
    run_finetuning,
)
from keras_ccmim.evaluation.metrics import accuracies
from keras_ccmim.evaluation.train_eval_features import evaluation_batches
from keras_ccmim.models.vit_classifier import ViTClassifier
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.training.callbacks import DEFAULT_CHECK_EVERY_STEPS
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
CLASSIFIER_FILE = "classifier.keras"


@dataclasses.dataclass(kw_only=True)
class FinetuneResult(FinetuneRun):
    """What `finetune` returns: the fields of the run (`FinetuneRun`: its
    length, lr, per-epoch `history` of `loss`, `val_top1` and `val_top5`,
    `best_epoch`, the steps done, the folder and the `ViTClassifier`) and
    the accuracies, in percent.

    Attributes:
        top1, top5, num_eval: the final classifier on the evaluation split.
        best_top1, best_top5: the accuracies at `best_epoch`, the epoch of
            the best evaluation top-1 (None when no epoch was recorded).
    """

    top1: float
    top5: float
    num_eval: int
    best_top1: float | None
    best_top5: float | None


def finetune_summary(result: FinetuneResult) -> str:
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


def evaluate_classifier(
    model: keras.Model, dataset: Iterable[Any], max_batches: int | None = None
) -> dict[str, float]:
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


def finetune_encoder(encoder: ViTEncoder, drop_path_rate: float = 0.1) -> ViTEncoder:
    """A copy of `encoder` with its weights and the given stochastic depth."""
    config = encoder.get_config()
    config["drop_path_rate"] = float(drop_path_rate)
    copy = ViTEncoder.from_config(config)
    copy.build()
    copy.set_weights(encoder.get_weights())
    return copy


def finetune(
    encoder: ViTEncoder,
    dataset: str = "synthetic_objects",
    *,
    train_split: str = "train",
    eval_split: str = "test",
    data_dir: PathLike | None = None,
    image_size: int | None = None,
    num_classes: int | None = None,
    train_num_images: int | None = None,
    eval_num_images: int | None = None,
    epochs: int = 100,
    steps_per_epoch: int | None = None,
    warmup_epochs: float = 5,
    batch_size: int = 128,
    base_learning_rate: float = 5e-4,
    weight_decay: float = 0.05,
    layer_decay: float = 0.65,
    drop_path_rate: float = 0.1,
    rand_augment_magnitude: float = 9,
    random_erasing_probability: float = 0.25,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    label_smoothing: float = 0.1,
    seed: int = 0,
    verbose: str | int = 0,
    output_dir: PathLike | None = None,
    fresh: bool = False,
    checkpoint_every_steps: int = 0,
    keep_checkpoints: int = 2,
    check_every_steps: int = DEFAULT_CHECK_EVERY_STEPS,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> FinetuneResult:
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
        dataset: as in `keras_ccmim.data.make_dataset`.
        train_split: the training split (TFDS slicing allowed).
        eval_split: the evaluation split (TFDS slicing allowed).
        data_dir: as in `keras_ccmim.data.make_dataset`.
        image_size: default the encoder's.
        num_classes: default from the dataset description.
        train_num_images: `num_images` of the training split.
        eval_num_images: `num_images` of the evaluation split.
        epochs: training length in epochs.
        steps_per_epoch: steps per epoch (default: one pass).
        warmup_epochs: linear warmup length.
        batch_size: the global batch.
        base_learning_rate: `lr = base_learning_rate * batch_size / 256`.
        weight_decay: AdamW weight decay.
        layer_decay: layer-wise learning-rate decay.
        drop_path_rate: stochastic depth of the fine-tuned encoder.
        rand_augment_magnitude: RandAugment magnitude (0: off).
        random_erasing_probability: probability of random erasing.
        mixup_alpha: MixUp alpha (0: off).
        cutmix_alpha: CutMix alpha (0: off).
        label_smoothing: label smoothing of the targets.
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
    from keras_ccmim.data import describe_dataset
    from keras_ccmim.evaluation.finetune_data import check_augmentation, make_finetune_dataset

    image_size = int(image_size or encoder.image_size[0])
    check_run_arguments(
        epochs=epochs, batch_size=batch_size, warmup_epochs=warmup_epochs, fresh=fresh,
        checkpoint_every_steps=checkpoint_every_steps, keep_checkpoints=keep_checkpoints,
        check_every_steps=check_every_steps,
    )
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
    num_classes = int(num_classes)
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
    train = functools.partial(
        make_finetune_dataset,
        dataset,
        split=train_split,
        batch_size=batch_size,
        image_size=image_size,
        num_classes=num_classes,
        data_dir=data_dir,
        seed=int(seed),
        num_images=train_num_images,
        rand_augment_magnitude=recipe["rand_augment_magnitude"],
        random_erasing_probability=recipe["random_erasing_probability"],
        mixup_alpha=recipe["mixup_alpha"],
        cutmix_alpha=recipe["cutmix_alpha"],
        label_smoothing=recipe["label_smoothing"],
    )
    evaluation, _ = evaluation_batches(
        dataset, split=eval_split, batch_size=batch_size, image_size=image_size,
        data_dir=data_dir, num_images=eval_num_images)

    def build_model():
        model = ViTClassifier(finetune_encoder(encoder, drop_path_rate), num_classes)
        model.build()
        return model

    task = FinetuneTask(
        what="fine-tuning",
        config_file=CONFIG_FILE,
        model_file=CLASSIFIER_FILE,
        model_name="classifier",
        lr_batch_size=256,
        build_model=build_model,
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        train_at=lambda step: train(start_batch=step),
        score=lambda model: evaluate_classifier(model, evaluation),
        score_names=("top1", "top5"),
    )
    run = run_finetuning(
        task, encoder,
        data=dict(
            dataset=dataset, train_split=train_split, eval_split=eval_split,
            data_dir=data_dir, image_size=image_size, num_classes=num_classes,
            train_num_images=train_num_images, eval_num_images=eval_num_images,
        ),
        recipe=recipe, epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
        seed=seed, verbose=verbose, output_dir=output_dir, fresh=fresh,
        checkpoint_every_steps=checkpoint_every_steps, keep_checkpoints=keep_checkpoints,
        check_every_steps=check_every_steps, callbacks=callbacks,
    )
    scores = evaluate_classifier(run.model, evaluation)
    result = FinetuneResult.from_run(
        run,
        top1=scores["top1"],
        top5=scores["top5"],
        num_eval=scores["num_eval"],
        best_top1=run.best("val_top1"),
        best_top5=run.best("val_top5"),
    )
    result.write()
    logger.info(finetune_summary(result))
    return result
