"""The picture of a pretraining run's masks (the encoder is saved as a preset:
`keras_ccmim.models.preset_files`)."""

import numpy as np
from keras import ops

from keras_ccmim.layers.patching import patchify, unpatchify

def _heat_colours(values):
    """`[...]` values in [0, 1] -> `[..., 3]` black-red-yellow-white colours."""
    # Hand-written (three lines): the main job's picture needs no matplotlib.
    v = np.clip(values, 0.0, 1.0)[..., None]
    return np.clip(np.concatenate([3 * v, 3 * v - 1, 3 * v - 2], axis=-1), 0.0, 1.0)


def mask_picture(images, mask, patch_size, scores=None, scale=4, reconstruction=None):
    """A uint8 picture: one column per image; rows are the image, the image
    with its masked patches greyed out, (if `reconstruction` is given) the
    reconstruction, and (if `scores` is given) the importance heat map
    (normalised per image).

    Args:
        images: `[B, H, W, 3]` values in [0, 1].
        mask: `[B, N]`, 1 = masked.
        patch_size: int.
        scores: optional `[B, N]`.
        scale: int, nearest-neighbour upscaling of the whole picture.
        reconstruction: optional `[B, H, W, 3]` values in [0, 1].
    """
    images = np.asarray(images, dtype="float32")
    batch, height, width, _ = images.shape
    grid = (height // patch_size, width // patch_size)

    def to_pixels(per_patch):
        per_patch = np.asarray(per_patch, dtype="float32").reshape((batch,) + grid)
        return per_patch.repeat(patch_size, axis=1).repeat(patch_size, axis=2)

    masked = to_pixels(mask)[..., None]
    rows = [images, images * (1 - masked) + 0.5 * masked]
    if reconstruction is not None:
        rows.append(np.clip(np.asarray(reconstruction, dtype="float32"), 0.0, 1.0))
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


def reconstructed_images(images, outputs, patch_size, norm_pix_loss):
    """`[B, H, W, 3]` normalised images: the visible patches of `images`
    and, where `outputs["mask"]` is 1, the decoder's `outputs["pred"]`
    (de-normalised with each target patch's mean and unbiased variance when
    `norm_pix_loss`, as the loss normalised the target)."""
    images = np.asarray(images, dtype="float32")
    target = np.asarray(ops.convert_to_numpy(patchify(images, patch_size)), dtype="float32")
    pred = np.asarray(ops.convert_to_numpy(ops.cast(outputs["pred"], "float32")))
    if norm_pix_loss:
        mean = target.mean(axis=-1, keepdims=True)
        var = target.var(axis=-1, keepdims=True, ddof=1)
        pred = pred * np.sqrt(var + 1e-6) + mean
    mask = np.asarray(ops.convert_to_numpy(outputs["mask"]), dtype="float32")[..., None]
    patches = target * (1 - mask) + pred * mask
    grid = (images.shape[1] // patch_size, images.shape[2] // patch_size)
    return ops.convert_to_numpy(unpatchify(patches, patch_size, grid, images.shape[-1]))


def mask_picture_of_outputs(images, outputs, patch_size, max_images=8, scale=4,
                            norm_pix_loss=None):
    """`mask_picture` (uint8 `[H, W, 3]`) of a pretrainer's outputs.

    Args:
        images: `[B, H, W, 3]` normalised images, as the model took them.
        outputs: the dict of `model(images, training=False)` (or of
            `model.predict`): its `mask` and, with importance masking,
            `scores`.
        patch_size: the model's patch size.
        max_images: columns drawn (the first images).
        scale: int, nearest-neighbour upscaling.
        norm_pix_loss: None draws no reconstruction; else whether the
            model's `pred` is per-patch normalised, and the picture has the
            reconstruction row (`reconstructed_images`; outputs with `pred`).
    """
    from keras_ccmim.data import unnormalize

    scores = outputs.get("scores")
    if scores is not None:
        scores = ops.convert_to_numpy(ops.cast(scores, "float32"))[:max_images]
    images = np.asarray(images, dtype="float32")[:max_images]
    reconstruction = None
    if norm_pix_loss is not None and "pred" in outputs:
        first = {key: np.asarray(ops.convert_to_numpy(outputs[key]))[:max_images]
                 for key in ("mask", "pred")}
        reconstruction = unnormalize(
            reconstructed_images(images, first, patch_size, norm_pix_loss))
    return mask_picture(
        unnormalize(images),
        ops.convert_to_numpy(outputs["mask"])[:max_images],
        patch_size,
        scores=scores,
        scale=scale,
        reconstruction=reconstruction,
    )


def save_mask_picture(path, images, outputs, patch_size, max_images=8, scale=4):
    """Saves `mask_picture_of_outputs(images, outputs, patch_size, ...)` as
    the PNG `path` and returns `path`."""
    from PIL import Image

    Image.fromarray(
        mask_picture_of_outputs(images, outputs, patch_size, max_images=max_images, scale=scale)
    ).save(path)
    return path
