"""Semantic segmentation fine-tuning of an encoder (dense transfer).

`segment(encoder, ..., output_dir=...)` fine-tunes a `ViTSegmenter` over a
copy of the encoder and scores it (mIoU, aAcc, mAcc) on the evaluation
split at each epoch end. It checkpoints and resumes as `finetune` does
(`keras_ccmim.training.fit_resumable`; the same rules for a rerun in the
same folder, `fresh=True` moving the earlier files to `previous-<n>/`).
Its output folder:

    segment_config.json   what the run trains (recipe, data, the encoder's
                          config and a digest of its weights)
    checkpoints/          resumable checkpoints
    history.jsonl         per epoch: mean training loss, val mIoU/aAcc/mAcc
    segmenter.keras       the fine-tuned `ViTSegmenter` (Keras format)
    predictions.png       image | ground truth | prediction, a few images
    results.json          what `SegmentResult.to_dict` gives

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

import dataclasses
import functools
import json
import logging
import math
import os

import keras
import numpy as np
from keras import ops

from keras_ccmim.data.segmentation_sources import IGNORE_LABEL
from keras_ccmim.evaluation.finetune import _check_count, _nan_advice
from keras_ccmim.evaluation.finetune_run_folder import (
    encoder_digest,
    prepare_output_dir,
    read_history,
    save_classifier,
)
from keras_ccmim.evaluation.segmentation_metrics import evaluate_segmenter
from keras_ccmim.pictures import grid_picture
from keras_ccmim.models.segmenter import ViTSegmenter, resized_encoder
from keras_ccmim.file_io import append_json_line, write_json_atomically
from keras_ccmim.training.nan_guard import NonFiniteLossError, StopOnNonFiniteLoss
from keras_ccmim.training.callbacks import DEFAULT_CHECK_EVERY_STEPS
from keras_ccmim.training.optimizer import LayerDecayAdamW, layer_decay_scales
from keras_ccmim.training.checkpoints import fit_resumable

logger = logging.getLogger(__name__)

CONFIG_FILE = "segment_config.json"
HISTORY_FILE = "history.jsonl"
MODEL_FILE = "segmenter.keras"
PICTURE_FILE = "predictions.png"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
RUN_OUTPUTS = (CHECKPOINT_DIR, CONFIG_FILE, HISTORY_FILE, MODEL_FILE, PICTURE_FILE,
               RESULTS_FILE)
SCORE_NAMES = ("miou", "aacc", "macc")
HISTORY_KEYS = ("epoch", "loss", "val_miou", "val_aacc", "val_macc")
# Fields this version added to segment_config.json, with the value of the
# runs written before them (FPN head, encoder fine-tuned), which still resume.
ADDED_FIELDS = {"head": "fpn", "freeze_encoder": False}
# An evaluation split up to this size (images and labels) is kept in memory.
EVAL_IN_MEMORY_BYTES = 1 << 28


@dataclasses.dataclass
class SegmentResult:
    """What `segment` returns: the final scores in percent (`miou`, `aacc`,
    `macc`, `per_class_iou`, over `num_pixels` scored pixels of `num_eval`
    images), the best epoch's mIoU, the run's length and lr, the per-epoch
    `history`, the steps done (`global_step`, and `initial_step` where this
    call started), the folder and its files, and the model."""

    miou: float
    aacc: float
    macc: float
    per_class_iou: list
    num_pixels: int
    num_eval: int
    num_classes: int
    image_size: int
    epochs: int
    steps: int
    learning_rate: float
    final_loss: float
    best_epoch: int
    best_miou: float
    history: dict
    global_step: int
    initial_step: int
    model: keras.Model = dataclasses.field(repr=False)
    output_dir: str = None
    paths: dict = None

    def to_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}


def label_colours(num_classes):
    """A fixed `[num_classes, 3]` palette in `[0, 1]`: background black,
    the classes spread over the hue circle."""
    import colorsys

    colours = [(0.0, 0.0, 0.0)] + [
        colorsys.hsv_to_rgb((0.61803 * k) % 1.0, 0.85, 0.95) for k in range(num_classes - 1)
    ]
    return np.asarray(colours, dtype="float32")


def prediction_picture(images, labels, predictions, num_classes, path=None, count=4):
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


class SegmentationValidation(keras.callbacks.Callback):
    """Scores the segmenter on the evaluation batches at each epoch end (no
    host sync during the epoch); adds `val_miou`, `val_aacc`, `val_macc` to
    the logs and appends one JSON line per epoch to `history_path`."""

    def __init__(self, dataset, num_classes, history_path=None):
        super().__init__()
        self.dataset, self.num_classes, self.history_path = dataset, num_classes, history_path
        self.records = []

    def on_epoch_end(self, epoch, logs=None):
        scores, _ = evaluate_segmenter(self.model, self.dataset, self.num_classes)
        loss = (logs or {}).get("loss")
        record = {
            "epoch": int(epoch) + 1,
            "global_step": int(ops.convert_to_numpy(self.model.optimizer.iterations)),
            "loss": None if loss is None else float(np.asarray(ops.convert_to_numpy(loss))),
            **{f"val_{name}": scores[name] for name in SCORE_NAMES},
        }
        if logs is not None:
            logs.update({f"val_{name}": scores[name] for name in SCORE_NAMES})
        self.records.append(record)
        if self.history_path:
            append_json_line(self.history_path, record)


def build_segmenter(encoder, num_classes, image_size=None, drop_path_rate=0.1, head_dim=64,
                    head="fpn", freeze_encoder=False):
    """A built `ViTSegmenter` over a copy of `encoder` at `image_size`; a
    frozen copy (`freeze_encoder`) gets no drop path."""
    copy = resized_encoder(encoder, image_size=image_size,
                           drop_path_rate=0.0 if freeze_encoder else drop_path_rate)
    copy.trainable = not freeze_encoder
    model = ViTSegmenter(copy, int(num_classes), head_dim=head_dim, head=head)
    model.build()
    return model


def segment(
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
    epochs=20,
    steps_per_epoch=None,
    warmup_epochs=1,
    batch_size=16,
    base_learning_rate=1e-4,
    weight_decay=0.05,
    layer_decay=0.65,
    drop_path_rate=0.1,
    head_dim=64,
    head="fpn",
    freeze_encoder=False,
    seed=0,
    verbose=0,
    output_dir=None,
    fresh=False,
    checkpoint_every_steps=0,
    keep_checkpoints=2,
    check_every_steps=DEFAULT_CHECK_EVERY_STEPS,
    num_pictures=4,
    callbacks=(),
):
    """Fine-tunes a `ViTSegmenter` over a copy of `encoder` (see the module
    docstring). `image_size` defaults to the encoder's; any multiple of its
    patch size works (the position table is recomputed). `num_classes`
    defaults to the source's; a folder source needs it. `head` is
    `ViTSegmenter`'s (`"fpn"` or `"linear"`); `freeze_encoder` trains the
    head alone over a fixed encoder. Returns a
    `SegmentResult`; raises `FinetuneConfigError` for a folder holding
    another run (without `fresh`) and `NonFiniteLossError` for a NaN loss.
    """
    from keras_ccmim.data.segmentation_pipeline import make_segmentation_dataset

    image_size = int(image_size or encoder.image_size[0])
    if image_size % encoder.patch_size:
        raise ValueError(
            f"image_size {image_size} is not a multiple of the encoder's patch size "
            f"{encoder.patch_size}; pass e.g. {encoder.patch_size * max(1, image_size // encoder.patch_size)}."
        )
    if int(epochs) < 1 or int(batch_size) < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}.")
    if not 0 <= float(warmup_epochs) < int(epochs):
        raise ValueError(f"warmup_epochs must be in [0, epochs), got {warmup_epochs}.")
    for name, value, low in (("checkpoint_every_steps", checkpoint_every_steps, 0),
                             ("keep_checkpoints", keep_checkpoints, 1),
                             ("check_every_steps", check_every_steps, 1),
                             ("num_pictures", num_pictures, 0)):
        _check_count(name, value, low)
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
    config = None
    if output_dir is not None:
        encoder_config = {k: v for k, v in encoder.get_config().items()
                          if k not in ("name", "trainable")}
        config = json.loads(json.dumps(dict(
            dataset=dataset, train_split=train_split, eval_split=eval_split,
            data_dir=data_dir, image_size=image_size, num_classes=num_classes,
            train_num_images=train_num_images, eval_num_images=eval_num_images,
            epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, **recipe,
            seed=int(seed), encoder=encoder_config, encoder_weights=encoder_digest(encoder),
            verbose=verbose, checkpoint_every_steps=int(checkpoint_every_steps),
            keep_checkpoints=int(keep_checkpoints), check_every_steps=int(check_every_steps),
        )))
    keras.utils.set_random_seed(int(seed))
    model = build_segmenter(encoder, num_classes, image_size, drop_path_rate, head_dim, head,
                            freeze_encoder)
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(int(round(recipe["warmup_epochs"] * steps_per_epoch)), total_steps - 1)
    learning_rate = recipe["base_learning_rate"] * batch_size / 16.0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else learning_rate,
        decay_steps=total_steps - warmup_steps,
        warmup_target=learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
    model.compile(
        optimizer=LayerDecayAdamW(schedule, lr_scales=layer_decay_scales(model, layer_decay),
                                  weight_decay=weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                        ignore_class=IGNORE_LABEL),
    )
    advice = functools.partial(_nan_advice, recipe["base_learning_rate"],
                               recipe["warmup_epochs"])

    def dataset_at(step):
        return train_at(start_batch=step)[0]

    checkpoint_dir = history_path = None
    if output_dir is not None:
        output_dir, checkpoint_dir = prepare_output_dir(
            output_dir, config, fresh, config_file=CONFIG_FILE, outputs=RUN_OUTPUTS,
            what="segmentation", added_fields=ADDED_FIELDS)
        history_path = os.path.join(output_dir, HISTORY_FILE)
    validation = SegmentationValidation(evaluation, num_classes, history_path)
    if output_dir is None:
        guard = StopOnNonFiniteLoss(advice=advice, check_every_steps=check_every_steps)
        model.fit(dataset_at(0), epochs=epochs, steps_per_epoch=steps_per_epoch,
                  callbacks=[guard, validation, *callbacks], verbose=verbose, shuffle=False)
        if guard.failure:
            raise NonFiniteLossError(guard.failure)
        initial_step, records = 0, {r["epoch"]: r for r in validation.records}
    else:
        _, initial_step = fit_resumable(
            model, dataset_at, epochs=epochs, steps_per_epoch=steps_per_epoch,
            checkpoint_dir=checkpoint_dir, callbacks=[validation, *callbacks],
            save_every_steps=checkpoint_every_steps, max_to_keep=keep_checkpoints,
            verbose=verbose, nan_advice=advice, check_every_steps=check_every_steps,
        )
        records = read_history(history_path)
    global_step = int(ops.convert_to_numpy(model.optimizer.iterations))
    epochs_done = sorted(e for e in records if 1 <= e <= global_step // steps_per_epoch)
    history = {key: [records[e].get(key) for e in epochs_done] for key in HISTORY_KEYS}
    scores, first = evaluate_segmenter(model, evaluation, num_classes)
    best_epoch = best_miou = None
    if history["val_miou"]:
        index = int(np.argmax(history["val_miou"]))
        best_epoch, best_miou = history["epoch"][index], history["val_miou"][index]
    losses = [v for v in history["loss"] if v is not None] or [math.nan]
    paths = None
    if output_dir is not None:
        paths = {
            "config": os.path.join(output_dir, CONFIG_FILE),
            "checkpoints": checkpoint_dir,
            "history": history_path,
            "segmenter": save_classifier(model, os.path.join(output_dir, MODEL_FILE)),
            "results": os.path.join(output_dir, RESULTS_FILE),
        }
        if num_pictures:
            paths["predictions"] = os.path.join(output_dir, PICTURE_FILE)
            prediction_picture(*first, num_classes, paths["predictions"], num_pictures)
    result = SegmentResult(
        **{k: scores[k] for k in ("miou", "aacc", "macc", "per_class_iou", "num_pixels")},
        num_eval=int(eval_info.num_images), num_classes=num_classes, image_size=image_size,
        epochs=epochs, steps=total_steps, learning_rate=learning_rate,
        final_loss=float(losses[-1]), best_epoch=best_epoch, best_miou=best_miou,
        history=history, global_step=global_step, initial_step=initial_step, model=model,
        output_dir=output_dir, paths=paths,
    )
    if paths is not None:
        write_json_atomically(paths["results"], result.to_dict())
    logger.info(
        f"Segmentation fine-tuned for {global_step} steps: mIoU {result.miou:.2f}, aAcc "
        f"{result.aacc:.2f}, mAcc {result.macc:.2f} on {result.num_eval} images"
        + (f"; segmenter saved to {paths['segmenter']}." if paths else ".")
    )
    return result
