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

import functools
import json
import logging
import math
import os

import keras
import numpy as np
from keras import ops

from keras_ccmim.evaluation.epoch_validation import (
    EpochValidation,
    best_epoch,
    evaluate_classifier,
    history_lists,
)
from keras_ccmim.evaluation.train_eval_features import evaluation_batches
from keras_ccmim.evaluation.finetune_result import FinetuneResult, finetune_summary
from keras_ccmim.evaluation.finetune_run_folder import (
    CLASSIFIER_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    RESULTS_FILE,
    encoder_digest,
    prepare_output_dir,
    read_history,
    save_classifier,
)
from keras_ccmim.models.vit_classifier import ViTClassifier
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.file_io import write_json_atomically
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.callbacks import DEFAULT_CHECK_EVERY_STEPS
from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
from keras_ccmim.training.checkpoints import fit_resumable

logger = logging.getLogger(__name__)


def finetune_encoder(encoder, drop_path_rate=0.1):
    """A copy of `encoder` with its weights and the given stochastic depth."""
    config = encoder.get_config()
    config["drop_path_rate"] = float(drop_path_rate)
    copy = ViTEncoder.from_config(config)
    copy.build()
    copy.set_weights(encoder.get_weights())
    return copy


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

    evaluation, eval_info = evaluation_batches(
        dataset, split=eval_split, batch_size=batch_size, image_size=image_size,
        data_dir=data_dir, num_images=eval_num_images)

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
        output_dir, checkpoint_dir = prepare_output_dir(output_dir, config, fresh)
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
        records = read_history(history_path)
    global_step = int(ops.convert_to_numpy(model.optimizer.iterations))
    history = history_lists(records, global_step // steps_per_epoch)
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
    logger.info(finetune_summary(results))
    return results


def _nan_advice(blr, warmup_epochs, step):
    """The fix printed when the fine-tuning loss became NaN."""
    return (
        f"Lower the base learning rate (--blr / base_learning_rate, now {blr:g}) or "
        f"lengthen the warmup (--warmup_epochs, now {warmup_epochs:g}), and start over: "
        "pass --fresh (fresh=True; the earlier files are moved to previous-<n>/) or a new "
        "--output_dir."
    )
