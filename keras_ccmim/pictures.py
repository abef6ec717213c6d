"""Pictures of what a pretrainer does: its masks, reconstructions and importance.

`mask_picture` draws one row per image, under these column labels:

1. "image": the image;
2. "masked input": its visible patches, the masked ones grey;
3. "reconstruction" (outputs with `pred`): the decoder's masked patches
   (de-normalised with each target patch's own mean and variance when
   `norm_pix_loss` is on) with the visible patches pasted from the image;
4. "importance" (masking with scores): the importance scores, min-max
   scaled per image, as a heat map over a grey copy of the image (bright:
   more likely masked).

A pretraining run's `masks.png` and TensorBoard `masks` image and
`keras_ccmim.evaluation.reconstruction_grid` are this picture;
`grid_picture` lays out any columns of images under labels.
"""

import numpy as np
from keras import ops

from keras_ccmim.data.augment import unnormalize
from keras_ccmim.layers.patching import patchify, unpatchify

IMAGE, MASKED, RECONSTRUCTION, IMPORTANCE = (
    "image", "masked input", "reconstruction", "importance")
# Anchors of a perceptually ordered dark-blue -> teal -> yellow colour map
# (viridis's); hand-written because the core install has no matplotlib.
_COLOURMAP = np.array(
    [
        [0.267, 0.005, 0.329],
        [0.231, 0.322, 0.545],
        [0.129, 0.569, 0.549],
        [0.369, 0.788, 0.384],
        [0.993, 0.906, 0.144],
    ],
    dtype="float32",
)
_PAD = 2
_GREY = 0.5
# Height of the label strip: Pillow's default font, with a pixel of margin.
LABEL_HEIGHT = 14


def colourize(values):
    """`[...]` values in `[0, 1]` -> `[..., 3]` RGB in `[0, 1]` (viridis-like)."""
    values = np.clip(np.asarray(values, dtype="float32"), 0.0, 1.0)
    position = values * (len(_COLOURMAP) - 1)
    low = np.floor(position).astype("int32").clip(0, len(_COLOURMAP) - 2)
    fraction = (position - low)[..., None]
    return _COLOURMAP[low] * (1 - fraction) + _COLOURMAP[low + 1] * fraction


def denormalize_prediction(pred, target_patches, norm_pix_loss, epsilon=1e-6):
    """Predicted patches back in the target's (normalised image) space.

    Args:
        pred: `[B, N, P]` decoder output.
        target_patches: `[B, N, P]`, `patchify(images)`.
        norm_pix_loss: whether `pred` is in per-patch normalised units.

    Returns:
        `[B, N, P]` numpy: `pred * sqrt(var + eps) + mean` with each target
        patch's mean and unbiased variance, or `pred` unchanged.
    """
    pred = np.asarray(pred, dtype="float32")
    if not norm_pix_loss:
        return pred
    target = np.asarray(target_patches, dtype="float32")
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    return pred * np.sqrt(var + epsilon) + mean


def _per_patch_to_pixels(values, grid, patch_size):
    values = np.asarray(values, dtype="float32").reshape((-1,) + tuple(grid))
    return values.repeat(patch_size, axis=1).repeat(patch_size, axis=2)


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(ops.cast(value, "float32")))


def check_images(images):
    """`images` as a float32 numpy `[B, H, W, 3]`, `B >= 1`, or a ValueError."""
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be [B, H, W, 3] with B >= 1, got {images.shape}.")
    return images


def mask_columns(images, outputs, patch_size, norm_pix_loss):
    """The columns of `mask_picture` as `[B, H, W, 3]` arrays in `[0, 1]`.

    Args:
        images: `[B, H, W, 3]` normalised images, as the model took them.
        outputs: the dict of `model(images, training=False)` (or of
            `model.predict`): `mask` `[B, N]` (1 = masked) and, when
            present, `pred` `[B, N, P]` and `scores` `[B, N]`.
        patch_size: the model's patch size.
        norm_pix_loss: whether `pred` is in per-patch normalised units (the
            model's `norm_pix_loss`).

    Returns:
        `(columns, labels)`: two to four arrays and their labels.
    """
    images = check_images(images)
    grid = (images.shape[1] // patch_size, images.shape[2] // patch_size)
    original = unnormalize(images)
    masked = _per_patch_to_pixels(_numpy(outputs["mask"]), grid, patch_size)[..., None]
    columns = [original, original * (1 - masked) + _GREY * masked]
    labels = [IMAGE, MASKED]
    if outputs.get("pred") is not None:
        target = ops.convert_to_numpy(patchify(images, patch_size))
        predicted = denormalize_prediction(_numpy(outputs["pred"]), target, norm_pix_loss)
        predicted = unnormalize(ops.convert_to_numpy(
            unpatchify(predicted, patch_size, grid, images.shape[-1])))
        columns.append(original * (1 - masked) + predicted * masked)
        labels.append(RECONSTRUCTION)
    if outputs.get("scores") is not None:
        scores = _numpy(outputs["scores"])
        low = scores.min(axis=1, keepdims=True)
        high = scores.max(axis=1, keepdims=True)
        scaled = (scores - low) / np.maximum(high - low, 1e-12)
        heat = colourize(_per_patch_to_pixels(scaled, grid, patch_size))
        columns.append(0.7 * heat + 0.3 * original.mean(axis=-1, keepdims=True))
        labels.append(IMPORTANCE)
    return columns, labels


def grid_picture(columns, labels=None, scale=None, min_side=96):
    """Lays out `[B, H, W, 3]` columns as a uint8 picture: one row per
    image, each column under its label.

    Args:
        columns: list of `[B, H, W, 3]` arrays in `[0, 1]`.
        labels: optional column labels, written above the columns in
            Pillow's default font.
        scale: nearest-neighbour upscaling; default the smallest integer that
            makes an image at least `min_side` pixels high.

    Returns:
        uint8 `[height, width, 3]`.
    """
    from PIL import Image, ImageDraw, ImageFont

    batch, height, width, _ = np.shape(columns[0])
    if scale is None:
        scale = max(1, -(-int(min_side) // height))
    cell_h, cell_w = height * scale, width * scale
    header = LABEL_HEIGHT if labels else 0
    canvas = np.full(
        (header + batch * (cell_h + _PAD) + _PAD, len(columns) * (cell_w + _PAD) + _PAD, 3),
        255, dtype="uint8",
    )
    for c, column in enumerate(columns):
        column = np.clip(np.asarray(column, dtype="float32"), 0, 1)
        column = column.repeat(scale, axis=1).repeat(scale, axis=2)
        for b in range(batch):
            y, x = header + _PAD + b * (cell_h + _PAD), _PAD + c * (cell_w + _PAD)
            canvas[y : y + cell_h, x : x + cell_w] = (column[b] * 255 + 0.5).astype("uint8")
    if labels:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default()
        for c, label in enumerate(labels):
            draw.text((_PAD + c * (cell_w + _PAD) + 2, 1), label, fill=(0, 0, 0), font=font)
        canvas = np.asarray(picture)
    return canvas


def mask_picture(images, outputs, patch_size, norm_pix_loss, max_images=None, scale=None):
    """The picture of the module docstring (uint8 `[height, width, 3]`) of
    the first `max_images` images (default all); arguments as in
    `mask_columns`, `scale` as in `grid_picture`."""
    images = np.asarray(images, dtype="float32")[:max_images]
    first = {key: _numpy(value)[:max_images] for key, value in outputs.items()
             if key in ("mask", "pred", "scores") and value is not None}
    return grid_picture(*mask_columns(images, first, patch_size, norm_pix_loss), scale=scale)


def save_png(path, picture):
    """Writes the uint8 picture `[height, width, 3]` as the PNG `path`;
    returns `path`."""
    from PIL import Image

    Image.fromarray(picture).save(path)
    return path
