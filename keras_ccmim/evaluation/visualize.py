"""Pictures of what a pretrainer does: masks, reconstructions, importance.

`reconstruction_grid` draws one row per image and four columns:

1. the original image;
2. the visible patches (masked ones grey);
3. the reconstruction: the predicted masked patches (de-normalised with each
   target patch's own mean and variance when `norm_pix_loss` is on) with the
   visible patches pasted from the original;
4. the importance heat map (the [CLS]-attention scores, min-max scaled per
   image, blended over a grey copy of the image), or the mask (white =
   masked) for a model without scores (random or block masking).
"""

import numpy as np
from keras import ops

from keras_ccmim.data.augment import unnormalize
from keras_ccmim.layers.patching import patchify, unpatchify

COLUMN_TITLES = ("original", "visible", "reconstruction", "importance")
MASK_TITLE = "masked = white"
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


def colourize(values):
    """`[...]` values in `[0, 1]` -> `[..., 3]` RGB in `[0, 1]` (viridis-like)."""
    values = np.clip(np.asarray(values, dtype="float32"), 0.0, 1.0)
    position = values * (len(_COLOURMAP) - 1)
    low = np.floor(position).astype("int32").clip(0, len(_COLOURMAP) - 2)
    fraction = (position - low)[..., None]
    return _COLOURMAP[low] * (1 - fraction) + _COLOURMAP[low + 1] * fraction


def _per_patch_to_pixels(values, grid, patch_size):
    values = np.asarray(values, dtype="float32").reshape((-1,) + tuple(grid))
    return values.repeat(patch_size, axis=1).repeat(patch_size, axis=2)


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


def reconstruction_columns(model, images):
    """The four columns of `reconstruction_grid` as `[B, H, W, 3]` arrays in [0, 1].

    Args:
        model: a `CCMIMPretrainer`.
        images: `[B, H, W, 3]` normalised images.

    Returns:
        `(columns, titles)`: a list of four arrays and their titles.
    """
    images = np.asarray(images, dtype="float32")
    encoder = model.encoder
    p, grid, channels = encoder.patch_size, encoder.grid_size, encoder.num_channels
    outputs = model.predict_on_batch(images)
    mask = np.asarray(outputs["mask"], dtype="float32")
    pred = np.asarray(outputs["pred"], dtype="float32")
    target = ops.convert_to_numpy(patchify(images, p))

    original = unnormalize(images)
    masked_pixels = _per_patch_to_pixels(mask, grid, p)[..., None]
    visible = original * (1 - masked_pixels) + _GREY * masked_pixels

    predicted = denormalize_prediction(pred, target, model.norm_pix_loss)
    predicted = unnormalize(ops.convert_to_numpy(unpatchify(predicted, p, grid, channels)))
    reconstruction = original * (1 - masked_pixels) + predicted * masked_pixels

    scores = outputs.get("scores")
    if scores is not None:
        scores = np.asarray(scores, dtype="float32")
        low = scores.min(axis=1, keepdims=True)
        high = scores.max(axis=1, keepdims=True)
        scaled = (scores - low) / np.maximum(high - low, 1e-12)
        heat = colourize(_per_patch_to_pixels(scaled, grid, p))
        grey = original.mean(axis=-1, keepdims=True)
        last, title = 0.7 * heat + 0.3 * grey, COLUMN_TITLES[3]
    else:
        last, title = np.repeat(masked_pixels, 3, axis=-1), MASK_TITLE
    return [original, visible, reconstruction, last], list(COLUMN_TITLES[:3]) + [title]


def grid_picture(columns, titles=None, scale=None, min_side=96):
    """Lays out `[B, H, W, 3]` columns as a uint8 picture, rows = images.

    Args:
        columns: list of `[B, H, W, 3]` arrays in `[0, 1]`.
        titles: optional column titles, written above the columns.
        scale: nearest-neighbour upscaling; default the smallest integer that
            makes an image at least `min_side` pixels high.

    Returns:
        uint8 `[height, width, 3]`.
    """
    from PIL import Image, ImageDraw

    batch, height, width, _ = np.shape(columns[0])
    if scale is None:
        scale = max(1, -(-int(min_side) // height))
    cell_h, cell_w = height * scale, width * scale
    header = 14 if titles else 0
    canvas = np.ones(
        (header + batch * (cell_h + _PAD) + _PAD, len(columns) * (cell_w + _PAD) + _PAD, 3),
        dtype="uint8",
    ) * 255
    for c, column in enumerate(columns):
        column = np.clip(np.asarray(column, dtype="float32"), 0, 1)
        column = column.repeat(scale, axis=1).repeat(scale, axis=2)
        for b in range(batch):
            y, x = header + _PAD + b * (cell_h + _PAD), _PAD + c * (cell_w + _PAD)
            canvas[y : y + cell_h, x : x + cell_w] = (column[b] * 255 + 0.5).astype("uint8")
    if titles:
        picture = Image.fromarray(canvas)
        draw = ImageDraw.Draw(picture)
        for c, title in enumerate(titles):
            draw.text((_PAD + c * (cell_w + _PAD) + 2, 1), title, fill=(0, 0, 0))
        canvas = np.asarray(picture)
    return canvas


def reconstruction_grid(model, images, path=None, scale=None):
    """The picture of the module docstring; saved as PNG when `path` is given.

    Args:
        model: a `CCMIMPretrainer`.
        images: `[B, H, W, 3]` normalised images (as `make_dataset` yields).
        path: optional `.png` path.
        scale: upscaling factor; default: images at least 96 px high.

    Returns:
        The uint8 picture `[height, width, 3]`.
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
        raise ValueError(f"images must be [B, H, W, 3] with B >= 1, got {images.shape}.")
    columns, titles = reconstruction_columns(model, images)
    picture = grid_picture(columns, titles, scale=scale)
    if path is not None:
        from PIL import Image

        Image.fromarray(picture).save(path)
    return picture
