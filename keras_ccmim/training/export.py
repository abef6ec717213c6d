"""The picture of a pretraining run's masks (the encoder is saved as a preset:
`keras_ccmim.models.preset_files`)."""

import numpy as np
from keras import ops

def _heat_colours(values):
    """`[...]` values in [0, 1] -> `[..., 3]` black-red-yellow-white colours."""
    # Hand-written (three lines): the main job's picture needs no matplotlib.
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


def mask_picture_of_outputs(images, outputs, patch_size, max_images=8, scale=4):
    """`mask_picture` (uint8 `[H, W, 3]`) of a pretrainer's outputs.

    Args:
        images: `[B, H, W, 3]` normalised images, as the model took them.
        outputs: the dict of `model(images, training=False)` (or of
            `model.predict`): its `mask` and, with importance masking,
            `scores`.
        patch_size: the model's patch size.
        max_images: columns drawn (the first images).
        scale: int, nearest-neighbour upscaling.
    """
    from keras_ccmim.data import unnormalize

    scores = outputs.get("scores")
    if scores is not None:
        scores = ops.convert_to_numpy(ops.cast(scores, "float32"))[:max_images]
    return mask_picture(
        unnormalize(np.asarray(images, dtype="float32")[:max_images]),
        ops.convert_to_numpy(outputs["mask"])[:max_images],
        patch_size,
        scores=scores,
        scale=scale,
    )


def save_mask_picture(path, images, outputs, patch_size, max_images=8, scale=4):
    """Saves `mask_picture_of_outputs(images, outputs, patch_size, ...)` as
    the PNG `path` and returns `path`."""
    from PIL import Image

    Image.fromarray(
        mask_picture_of_outputs(images, outputs, patch_size, max_images=max_images, scale=scale)
    ).save(path)
    return path
