"""Pretraining and evaluation on numpy arrays, for a machine without TensorFlow.

The library's `pretrain(config)` reads its data through `tf.data`; the GPU
machine has no TensorFlow. The GPU run's pretraining parts therefore train
the library's own model, optimizer, schedule and masking metrics
(`CCMIMPretrainer`, `make_optimizer`, `warmup_cosine`, `ForegroundLift`) with
`model.fit` on batches drawn from numpy arrays here: shuffled every pass,
each image flipped left-right with probability 1/2, ImageNet-normalised.
There is no RandomResizedCrop, so these runs see less augmentation than the
main job's pipeline.

It imports Keras: a program imports it only once `KERAS_BACKEND` is set.
"""

import io
import os
import tempfile
import time
import zipfile

import keras
import numpy as np

from keras_ccmim import CCMIMPretrainer
from keras_ccmim.data.augment import IMAGENET_MEAN, IMAGENET_STD
from keras_ccmim.evaluation.features import extract_features
from keras_ccmim.evaluation.knn import knn_classify
from keras_ccmim.evaluation.linear_probe import linear_probe
from keras_ccmim.models.preset_files import save_to_preset
from keras_ccmim.models.vit_encoder import ViTEncoder
from keras_ccmim.training.callbacks import ForegroundLift
from keras_ccmim.training.optimizer import make_optimizer, scaled_learning_rate
from keras_ccmim.training.schedules import warmup_cosine


def normalized(images):
    """uint8 `[n, H, W, 3]` -> ImageNet-normalised float32 (as the pipeline's)."""
    images = np.asarray(images, dtype="float32") / 255.0
    return (images - np.float32(IMAGENET_MEAN)) / np.float32(IMAGENET_STD)


def batches(images, batch_size, seed):
    """Endless `(batch,)` tuples of normalised images: a fresh permutation of
    `images` per pass, each image flipped left-right with probability 1/2."""
    rng = np.random.default_rng(seed)
    count = len(images) - len(images) % batch_size
    if count < batch_size:
        raise ValueError(f"{len(images)} images make no batch of {batch_size}.")
    while True:
        order = rng.permutation(len(images))[:count]
        for start in range(0, count, batch_size):
            batch = images[np.sort(order[start:start + batch_size])]
            flip = rng.random(batch_size) < 0.5
            batch = np.where(flip[:, None, None, None], batch[:, :, ::-1], batch)
            yield (normalized(batch),)


def build_pretrainer(preset, encoder_overrides, steps, blr, batch_size, warmup_fraction,
                     seed=0, **pretrainer_kwargs):
    """A compiled `CCMIMPretrainer` for `steps` training steps: AdamW (the
    library's decay rule) with linear warmup and cosine decay, `lr = blr *
    batch / 256`. A sampling temperature schedule spans the `steps`."""
    keras.utils.set_random_seed(seed)
    if pretrainer_kwargs.get("sampling_temperature_start") is not None:
        pretrainer_kwargs["sampling_temperature_steps"] = steps
    model = CCMIMPretrainer.from_architecture(
        preset, encoder_overrides=dict(encoder_overrides, seed=seed), seed=seed,
        **pretrainer_kwargs)
    model.build()
    schedule = warmup_cosine(scaled_learning_rate(blr, batch_size),
                             int(warmup_fraction * steps), steps)
    model.compile(optimizer=make_optimizer(model, schedule))
    return model


class PointLog(keras.callbacks.Callback):
    """Keeps every point's (epoch's) logs and hands the history so far to
    `on_point` (which writes it); put it after the metrics callbacks."""

    def __init__(self, on_point=None):
        super().__init__()
        self.on_point = on_point
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if self.on_point:
            self.on_point(self.history)


def pretrain_arrays(model, images, steps, batch_size, points, seed=0, foreground=None,
                    lift_images=256, on_point=None):
    """Trains `model` for `steps` steps on `images` (uint8), logging `points`
    times (each a Keras epoch): the losses and, with `foreground`, the
    masking metrics of `ForegroundLift` on the first `lift_images` images.

    Returns `(history, seconds of training)`.
    """
    callbacks = []
    if foreground is not None:
        callbacks.append(ForegroundLift(normalized(images[:lift_images]),
                                        foreground[:lift_images], model.encoder.patch_size,
                                        seed=seed))
    points_log = PointLog(on_point)
    per_point = max(steps // points, 1)
    start = time.perf_counter()
    model.fit(batches(images, batch_size, seed), steps_per_epoch=per_point, epochs=points,
              verbose=0, callbacks=[*callbacks, points_log])
    return points_log.history, time.perf_counter() - start


def seconds_per_step(model, images, batch_size, steps, seed=0):
    """Seconds of one training step of `model` after compilation (the model
    trains for `2 + steps` steps: a throwaway for calibration)."""
    source = batches(images, batch_size, seed)
    model.fit(source, steps_per_epoch=2, epochs=1, verbose=0)  # compiles
    start = time.perf_counter()
    model.fit(source, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


def evaluate_encoders(encoders, train, heldout, probe_epochs, seed=0):
    """k-NN (k=20, T=0.07) and a linear probe of each encoder's mean-patch
    features: the bank and the probe's training set from `train`, scored on
    `heldout` (each `(uint8 images, labels)`). Each accuracy comes with its
    binomial standard error on the held-out images, in percent."""
    def features(encoder, images, labels):
        chunks = [(normalized(images[i:i + 500]), labels[i:i + 500])
                  for i in range(0, len(images), 500)]
        return extract_features(encoder, chunks)

    rows = {}
    for name, encoder in encoders.items():
        train_x, train_y = features(encoder, *train)
        eval_x, eval_y = features(encoder, *heldout)
        knn = knn_classify(train_x, train_y, eval_x, eval_y, num_classes=10)
        probe = linear_probe(train_x, train_y, eval_x, eval_y, num_classes=10,
                             epochs=probe_epochs, seed=seed)
        row = {"knn_top1": knn["top1"], "probe_top1": probe.top1,
               "num_bank": int(len(train_y)), "num_heldout": int(len(eval_y))}
        for key in ("knn_top1", "probe_top1"):
            p = row[key] / 100.0
            row[key + "_standard_error"] = 100.0 * float(np.sqrt(p * (1 - p) / len(eval_y)))
        rows[name] = row
    return rows


def save_preset_zip(encoder, path, dtype="float16"):
    """Writes `encoder` as a preset (config.json, model.weights.h5,
    metadata.json) with `dtype` weights, zipped into one file at `path`
    (one file: what comes back from the GPU machine is counted in files).
    `load_encoder(<unzipped folder>, dtype="float32")` reads it back."""
    config = dict(encoder.get_config(), dtype=dtype)
    low = ViTEncoder.from_config(config)
    low.build()
    for target, source in zip(low.weights, encoder.weights):
        target.assign(keras.ops.cast(source.value, target.dtype))
    name = os.path.splitext(os.path.basename(path))[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_to_preset(low, os.path.join(tmp, name))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(os.listdir(folder)):
                archive.write(os.path.join(folder, file), f"{name}/{file}")
    with open(path, "wb") as f:
        f.write(buffer.getvalue())
    return path
