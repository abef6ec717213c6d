"""Saving what a pretraining run leaves: the encoder and a picture of its masks."""

import json
import os

import keras
import numpy as np
from keras import ops

from keras_ccmim.models.vit_encoder import ViTEncoder

ENCODER_WEIGHTS = "encoder.weights.h5"
ENCODER_CONFIG = "encoder_config.json"


class _EncoderHolder(keras.Model):
    """Gives a `ViTEncoder` layer `save_weights` / `load_weights`."""

    def __init__(self, encoder):
        super().__init__(name="encoder_holder")
        self.encoder = encoder
        self.built = encoder.built


def save_encoder(encoder, directory):
    """Writes `encoder.weights.h5` and `encoder_config.json` into `directory`.

    Returns:
        The path of the weights file.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ENCODER_WEIGHTS)
    _EncoderHolder(encoder).save_weights(path)
    with open(os.path.join(directory, ENCODER_CONFIG), "w") as f:
        json.dump(keras.saving.serialize_keras_object(encoder), f, indent=1)
    return path


def _unreadable(path, error):
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return ValueError(
        f"Cannot read {path} ({reason}): the file is unreadable or damaged. Check its "
        "permissions; if it is damaged, rerun the pretraining command of this workdir "
        "(train/pretrain.py with the same flags), which writes it again from the last "
        "checkpoint."
    )


def load_encoder(directory):
    """The `ViTEncoder` saved by `save_encoder` in `directory`, built, with
    its weights.

    Raises:
        ValueError: a file that cannot be read or does not hold the encoder,
            naming the file and the fix.
    """
    config_path = os.path.join(directory, ENCODER_CONFIG)
    try:
        with open(config_path) as f:
            encoder = keras.saving.deserialize_keras_object(json.load(f))
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise _unreadable(config_path, error) from error
    if not isinstance(encoder, ViTEncoder):
        raise ValueError(f"{directory} does not hold a ViTEncoder config.")
    if not encoder.built:
        encoder.build()
    holder = _EncoderHolder(encoder)
    weights_path = os.path.join(directory, ENCODER_WEIGHTS)
    try:
        holder.load_weights(weights_path)
    except (OSError, ValueError, KeyError) as error:
        raise _unreadable(weights_path, error) from error
    return encoder


def _heat_colours(values):
    """`[...]` values in [0, 1] -> `[..., 3]` black-red-yellow-white colours."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    return np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0.0, 1.0)


def mask_picture(images, mask, patch_size, scores=None, scale=4):
    """A uint8 picture: one column per image; rows are the image, the image
    with its masked patches greyed out, and (if `scores` is given) the
    importance heat map (normalised per image).

    Args:
        images: `[B, H, W, 3]` values in [0, 1].
        mask: `[B, N]`, 1 = masked.
        patch_size: int.
        scores: optional `[B, N]`.
        scale: int, nearest-neighbour upscaling of the whole picture.
    """
    images = np.asarray(images, dtype="float32")
    batch, height, width, _ = images.shape
    grid = (height // patch_size, width // patch_size)

    def to_pixels(per_patch):
        per_patch = np.asarray(per_patch, dtype="float32").reshape((batch,) + grid)
        return per_patch.repeat(patch_size, axis=1).repeat(patch_size, axis=2)

    masked = to_pixels(mask)[..., None]
    rows = [images, images * (1 - masked) + 0.5 * masked]
    if scores is not None:
        scores = np.asarray(scores, dtype="float32")
        low = scores.min(axis=1, keepdims=True)
        high = scores.max(axis=1, keepdims=True)
        rows.append(_heat_colours(to_pixels((scores - low) / np.maximum(high - low, 1e-12))))
    pad = 2
    canvas = np.ones(
        (len(rows) * (height + pad) + pad, batch * (width + pad) + pad, 3), dtype="float32"
    )
    for r, row in enumerate(rows):
        for b in range(batch):
            y, x = pad + r * (height + pad), pad + b * (width + pad)
            canvas[y : y + height, x : x + width] = row[b]
    canvas = canvas.repeat(scale, axis=0).repeat(scale, axis=1)
    return (canvas * 255 + 0.5).astype("uint8")


def save_mask_picture(path, images, outputs, patch_size, max_images=8, scale=4):
    """Saves `mask_picture` of a pretrainer's outputs as a PNG.

    Args:
        path: a `.png` path.
        images: `[B, H, W, 3]` normalised images, as the model took them.
        outputs: the dict of `model(images, training=False)` (or of
            `model.predict`): its `mask` and, with importance masking,
            `scores`.
        patch_size: the model's patch size.
        max_images: columns drawn (the first images).
    """
    from PIL import Image

    from keras_ccmim.data import unnormalize

    scores = outputs.get("scores")
    if scores is not None:
        scores = ops.convert_to_numpy(ops.cast(scores, "float32"))[:max_images]
    picture = mask_picture(
        unnormalize(np.asarray(images, dtype="float32")[:max_images]),
        ops.convert_to_numpy(outputs["mask"])[:max_images],
        patch_size,
        scores=scores,
        scale=scale,
    )
    Image.fromarray(picture).save(path)
    return path
