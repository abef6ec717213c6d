"""Fine-tuning a segmenter over an encoder (dense transfer).

`finetune_segmenter(encoder, ..., output_dir=...)` fine-tunes a
`ViTSegmenter` over a copy of the encoder and scores it (mIoU, aAcc, mAcc)
on the evaluation split at each epoch end, through the run every
fine-tuning shares (`keras_ccmim.evaluation.finetune_run`: checkpoints,
resume, the same rules for a rerun in the same folder, `fresh=True` moving
the earlier files to `previous-<n>/`). Its output folder:

    segment_config.json   what the run trains (recipe, data, the encoder's
                          config and a digest of its weights)
    checkpoints/          resumable checkpoints
    history.jsonl         per epoch: mean training loss, val mIoU/aAcc/mAcc
    segmenter.keras       the fine-tuned `ViTSegmenter` (Keras format)
    predictions.png       image | ground truth | prediction, a few images
    results.json          what `SegmentationResult.to_dict` gives

The recipe follows MAE / ccMIM's ADE20K fine-tuning, scaled for small runs:
AdamW, `lr = base_learning_rate * batch_size / 16`, linear warmup then
cosine to 0, layer-wise lr decay 0.65, drop path 0.1, weight decay 0.05,
per-pixel cross-entropy that skips the ignore label (255).

`head="linear", freeze_encoder=True` is the linear probe of dense transfer
instead: the encoder stays fixed (inference mode, no drop path) and only a
linear map from each patch's features to its pixels' logits is trained
(`ViTSegmenter`'s linear head), a convex problem whose result depends on the
features and hardly on the initialisation or the run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence

import keras
import numpy as np
from numpy.typing import ArrayLike

from keras_ccmim.data.segmentation_sources import IGNORE_LABEL
from keras_ccmim.evaluation.finetune_run import (
    FinetuneRun,
    FinetuneTask,
    check_count,
    check_run_arguments,
    run_finetuning,
)
from keras_ccmim.evaluation.segmentation_metrics import evaluate_segmenter
from keras_ccmim.pictures import grid_picture
from keras_ccmim.models.segmenter import SegmentationHead, ViTSegmenter, resized_encoder
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.training.callbacks import DEFAULT_CHECK_EVERY_STEPS
from keras_ccmim.type_aliases import PathLike

logger = logging.getLogger(__name__)

CONFIG_FILE = "segment_config.json"
MODEL_FILE = "segmenter.keras"
PICTURE_FILE = "predictions.png"
SCORE_NAMES = ("miou", "aacc", "macc")
# Fields this version added to segment_config.json, with the value of the
# runs written before them (FPN head, encoder fine-tuned), which still resume.
ADDED_FIELDS = {"head": "fpn", "freeze_encoder": False}
# An evaluation split up to this size (images and labels) is kept in memory.
EVAL_IN_MEMORY_BYTES = 1 << 28


@dataclasses.dataclass(kw_only=True)
class SegmentationResult(FinetuneRun):
    """What `finetune_segmenter` returns: the fields of the run
    (`FinetuneRun`: its length, lr, per-epoch `history` of `loss`,
    `val_miou`, `val_aacc` and `val_macc`, `best_epoch`, the steps done,
    the folder and the `ViTSegmenter`) and the final scores in percent
    (`miou`, `aacc`, `macc`, `per_class_iou`, over `num_pixels` scored
    pixels of `num_eval` images), with `best_miou`, the mIoU at
    `best_epoch`."""

    miou: float
    aacc: float
    macc: float
    per_class_iou: list[float | None]
    num_pixels: int
    num_eval: int
    num_classes: int
    image_size: int
    best_miou: float | None


def label_colours(num_classes: int) -> np.ndarray:
    """A fixed `[num_classes, 3]` palette in `[0, 1]`: background black,
    the classes spread over the hue circle."""
    import colorsys

    colours = [(0.0, 0.0, 0.0)] + [
        colorsys.hsv_to_rgb((0.61803 * k) % 1.0, 0.85, 0.95) for k in range(num_classes - 1)
    ]
    return np.asarray(colours, dtype="float32")


def prediction_picture(
    images: ArrayLike,
    labels: ArrayLike,
    predictions: ArrayLike,
    num_classes: int,
    path: PathLike | None = None,
    count: int = 4,
) -> np.ndarray:
    """Rows of image | ground truth | prediction (ignored pixels white);
    saved as PNG at `path` when given. Returns the uint8 picture."""
    from keras_ccmim.data.augment import unnormalize

    palette = np.concatenate([label_colours(num_classes), np.ones((1, 3), "float32")])

    def paint(values):
        values = np.asarray(values)[:count].astype(np.int64)
        return palette[np.where((values >= 0) & (values < num_classes), values, num_classes)]

    columns = [unnormalize(np.asarray(images)[:count]), paint(labels), paint(predictions)]
    picture = grid_picture(columns, ["image", "truth", "prediction"])
    if path is not None:
        from PIL import Image

        Image.fromarray(picture).save(path)
    return picture


def build_segmenter(
    encoder: ViTEncoder,
    num_classes: int,
    image_size: int | None = None,
    drop_path_rate: float = 0.1,
    head_dim: int = 64,
    head: SegmentationHead = "fpn",
    freeze_encoder: bool = False,
) -> ViTSegmenter:
    """A built `ViTSegmenter` over a copy of `encoder` at `image_size`; a
    frozen copy (`freeze_encoder`) gets no drop path."""
    copy = resized_encoder(encoder, image_size=image_size,
                           drop_path_rate=0.0 if freeze_encoder else drop_path_rate)
    copy.trainable = not freeze_encoder
    model = ViTSegmenter(copy, int(num_classes), head_dim=head_dim, head=head)
    model.build()
    return model


def finetune_segmenter(
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
    epochs: int = 20,
    steps_per_epoch: int | None = None,
    warmup_epochs: float = 1,
    batch_size: int = 16,
    base_learning_rate: float = 1e-4,
    weight_decay: float = 0.05,
    layer_decay: float = 0.65,
    drop_path_rate: float = 0.1,
    head_dim: int = 64,
    head: SegmentationHead = "fpn",
    freeze_encoder: bool = False,
    seed: int = 0,
    verbose: str | int = 0,
    output_dir: PathLike | None = None,
    fresh: bool = False,
    checkpoint_every_steps: int = 0,
    keep_checkpoints: int = 2,
    check_every_steps: int = DEFAULT_CHECK_EVERY_STEPS,
    num_pictures: int = 4,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> SegmentationResult:
    """Fine-tunes a `ViTSegmenter` over a copy of `encoder` (see the module
    docstring). `image_size` defaults to the encoder's; any multiple of its
    patch size works (the position table is recomputed). `num_classes`
    defaults to the source's; a folder source needs it. `head` is
    `ViTSegmenter`'s (`"fpn"` or `"linear"`); `freeze_encoder` trains the
    head alone over a fixed encoder. `num_pictures` images go into
    predictions.png (0: none). The other arguments are `finetune`'s.
    Returns a `SegmentationResult`; raises `FinetuneConfigError` for a
    folder holding another run (without `fresh`) and `NonFiniteLossError`
    for a NaN loss.
    """
    from keras_ccmim.data.segmentation_pipeline import make_segmentation_dataset

    image_size = int(image_size or encoder.image_size[0])
    if image_size % encoder.patch_size:
        raise ValueError(
            f"image_size {image_size} is not a multiple of the encoder's patch size "
            f"{encoder.patch_size}; pass e.g. {encoder.patch_size * max(1, image_size // encoder.patch_size)}."
        )
    check_run_arguments(
        epochs=epochs, batch_size=batch_size, warmup_epochs=warmup_epochs, fresh=fresh,
        checkpoint_every_steps=checkpoint_every_steps, keep_checkpoints=keep_checkpoints,
        check_every_steps=check_every_steps,
    )
    check_count("num_pictures", num_pictures, 0)
    epochs, batch_size = int(epochs), int(batch_size)
    common = dict(image_size=image_size, data_dir=data_dir, num_classes=num_classes)
    evaluation, eval_info = make_segmentation_dataset(
        dataset, split=eval_split, batch_size=batch_size, training=False,
        num_images=eval_num_images, **common)
    if eval_info.num_images * image_size * image_size * 16 <= EVAL_IN_MEMORY_BYTES:
        # Read once: each pass over a tf.data pipeline starts its threads again.
        evaluation = list(evaluation.as_numpy_iterator())
    train_at = functools.partial(
        make_segmentation_dataset, dataset, split=train_split, batch_size=batch_size,
        training=True, seed=int(seed), num_images=train_num_images, **common)
    _, train_info = train_at(start_batch=0)
    num_classes = int(num_classes or train_info.num_classes)
    if steps_per_epoch is None:
        steps_per_epoch = max(train_info.num_images // batch_size, 1)
    steps_per_epoch = int(steps_per_epoch)
    recipe = dict(warmup_epochs=float(warmup_epochs),
                  base_learning_rate=float(base_learning_rate),
                  weight_decay=float(weight_decay), layer_decay=float(layer_decay),
                  drop_path_rate=float(drop_path_rate), head_dim=int(head_dim),
                  head=str(head), freeze_encoder=bool(freeze_encoder))
    task = FinetuneTask(
        what="segmentation",
        config_file=CONFIG_FILE,
        model_file=MODEL_FILE,
        model_name="segmenter",
        extra_outputs=(PICTURE_FILE,),
        added_fields=ADDED_FIELDS,
        lr_batch_size=16,
        build_model=lambda: build_segmenter(encoder, num_classes, image_size, drop_path_rate,
                                            head_dim, head, freeze_encoder),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        ignore_class=IGNORE_LABEL),
        train_at=lambda step: train_at(start_batch=step)[0],
        score=lambda model: evaluate_segmenter(model, evaluation, num_classes)[0],
        score_names=SCORE_NAMES,
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
    scores, first = evaluate_segmenter(run.model, evaluation, num_classes)
    if run.paths is not None and num_pictures:
        run.paths["predictions"] = os.path.join(run.output_dir, PICTURE_FILE)
        prediction_picture(*first, num_classes, run.paths["predictions"], num_pictures)
    result = SegmentationResult.from_run(
        run, **{k: scores[k] for k in ("miou", "aacc", "macc", "per_class_iou", "num_pixels")},
        num_eval=int(eval_info.num_images), num_classes=num_classes, image_size=image_size,
        best_miou=run.best("val_miou"),
    )
    result.write()
    logger.info(
        f"Segmentation fine-tuned for {result.global_step} steps: mIoU {result.miou:.2f}, "
        f"aAcc {result.aacc:.2f}, mAcc {result.macc:.2f} on {result.num_eval} images"
        + (f"; segmenter saved to {result.paths['segmenter']}." if result.paths else ".")
    )
    return result
