"""Per-image transforms for tf.data: RandomResizedCrop, flip, normalisation.

Every random choice comes from TF's stateless random ops and an explicit
`seed` (an int tensor of shape `[2]`), so a pipeline is repeatable. A
foreground mask, when given, receives exactly the crop box and flip of its
image: it is cut with the same box, resized on the same pixel grid (bilinear,
then thresholded at 0.5) and flipped with the same coin. TensorFlow is imported
inside the transforms, so the constants and `unnormalize` load without it.
"""

from collections.abc import Sequence

import numpy as np
from keras import ops

from keras_ccmim.input_contract import IMAGENET_MEAN, IMAGENET_STD
from keras_ccmim.type_aliases import Tensor

DEFAULT_CROP_SCALE = (0.2, 1.0)
DEFAULT_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def normalize(images: Tensor) -> Tensor:
    """Maps uint8-range images to ImageNet-normalised float32 (TensorFlow).

    Args:
        images: tensor or array `[..., 3]` with values in `[0, 255]`.

    Returns:
        float32 `tf.Tensor` of the same shape: `(images / 255 - mean) / std`.
    """
    import tensorflow as tf

    images = tf.cast(images, tf.float32) / 255.0
    return (images - IMAGENET_MEAN) / IMAGENET_STD


def unnormalize(images: Tensor, clip: bool = True) -> Tensor:
    """Inverts `normalize`, to `[0, 1]`, for showing images.

    Numpy input gives numpy output (what plotting wants); a backend tensor
    gives a tensor of the active Keras backend.

    Args:
        images: array or tensor `[..., 3]`, normalised images.
        clip: bool, whether to clip the result to `[0, 1]`.

    Returns:
        float32 images `[..., 3]` in `[0, 1]` (before clipping, `images * std
        + mean`).
    """
    if isinstance(images, (np.ndarray, np.generic, list, tuple)):
        images = np.asarray(images, dtype=np.float32)
        images = images * np.float32(IMAGENET_STD) + np.float32(IMAGENET_MEAN)
        return np.clip(images, 0.0, 1.0) if clip else images
    images = ops.cast(images, "float32")
    images = images * ops.array(IMAGENET_STD, "float32") + ops.array(
        IMAGENET_MEAN, "float32"
    )
    return ops.clip(images, 0.0, 1.0) if clip else images


def random_resized_crop_box(
    seed: Tensor,
    height: Tensor,
    width: Tensor,
    scale: Sequence[float] = DEFAULT_CROP_SCALE,
    ratio: Sequence[float] = DEFAULT_CROP_RATIO,
    attempts: int = 10,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Samples a RandomResizedCrop box, as torchvision does.

    Up to `attempts` candidates draw an area fraction uniformly from `scale`
    and an aspect ratio (width / height) log-uniformly from `ratio`; the first
    that fits in the image wins, placed uniformly. If none fits, the box is
    the largest central crop whose aspect ratio lies within `ratio`. All
    candidates are drawn at once, so the op count does not depend on the data.

    Args:
        seed: int tensor `[2]`, the stateless seed.
        height: int scalar tensor, image height.
        width: int scalar tensor, image width.
        scale: pair of floats, range of the crop's fraction of the image area.
        ratio: pair of floats, range of the crop's aspect ratio.
        attempts: int, number of candidate boxes.

    Returns:
        `(top, left, crop_height, crop_width)`, int32 scalar tensors.
    """
    import tensorflow as tf

    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=4)
    )
    height = tf.cast(height, tf.int32)
    width = tf.cast(width, tf.int32)
    height_f = tf.cast(height, tf.float32)
    width_f = tf.cast(width, tf.float32)

    area = height_f * width_f * tf.random.stateless_uniform(
        [attempts], area_seed, minval=scale[0], maxval=scale[1]
    )
    log_ratio = tf.random.stateless_uniform(
        [attempts],
        ratio_seed,
        minval=float(np.log(ratio[0])),
        maxval=float(np.log(ratio[1])),
    )
    aspect = tf.exp(log_ratio)
    candidate_w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    candidate_h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (
        (candidate_w > 0)
        & (candidate_h > 0)
        & (candidate_w <= width)
        & (candidate_h <= height)
    )
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)

    # Fallback: the whole image, trimmed to the nearest allowed aspect ratio.
    image_ratio = width_f / height_f
    fallback_w = tf.where(
        image_ratio > ratio[1],
        tf.cast(tf.round(height_f * ratio[1]), tf.int32),
        width,
    )
    fallback_h = tf.where(
        image_ratio < ratio[0],
        tf.cast(tf.round(width_f / ratio[0]), tf.int32),
        height,
    )
    found = tf.reduce_any(fits)
    crop_w = tf.where(found, candidate_w[first], fallback_w)
    crop_h = tf.where(found, candidate_h[first], fallback_h)
    crop_w = tf.clip_by_value(crop_w, 1, width)
    crop_h = tf.clip_by_value(crop_h, 1, height)

    random_top = tf.random.stateless_uniform(
        [], top_seed, minval=0, maxval=height - crop_h + 1, dtype=tf.int32
    )
    random_left = tf.random.stateless_uniform(
        [], left_seed, minval=0, maxval=width - crop_w + 1, dtype=tf.int32
    )
    top = tf.where(found, random_top, (height - crop_h) // 2)
    left = tf.where(found, random_left, (width - crop_w) // 2)
    return top, left, crop_h, crop_w


def _resize_image(image, size):
    """Bicubic resize, antialiased when shrinking (as PIL's), clipped."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    shape = tf.shape(image)
    size = tf.convert_to_tensor(size, tf.int32)
    shrinking = tf.reduce_any(shape[:2] > size)
    image = tf.cond(
        shrinking,
        lambda: tf.image.resize(image, size, method="bicubic", antialias=True),
        # Antialiasing leaves upsampling unchanged but costs time.
        lambda: tf.image.resize(image, size, method="bicubic"),
    )
    return tf.clip_by_value(image, 0.0, 255.0)


def _resize_mask(mask, size):
    """Bilinear resize on the image's sampling grid, thresholded at 0.5."""
    import tensorflow as tf

    mask = tf.cast(mask[..., None], tf.float32)
    mask = tf.image.resize(mask, size, method="bilinear")
    return tf.cast(mask[..., 0] >= 0.5, tf.float32)


def random_resized_crop(
    image: Tensor,
    seed: Tensor,
    image_size: int,
    mask: Tensor | None = None,
    scale: Sequence[float] = DEFAULT_CROP_SCALE,
    ratio: Sequence[float] = DEFAULT_CROP_RATIO,
) -> Tensor | tuple[Tensor, Tensor]:
    """Crops a random box (see `random_resized_crop_box`), resizes bicubically.

    Args:
        image: `[H, W, 3]` tensor, values in `[0, 255]`.
        seed: int tensor `[2]`.
        image_size: int, output height and width.
        mask: optional `[H, W]` tensor (0/1), cut with the same box.
        scale: pair of floats, range of the crop's area fraction.
        ratio: pair of floats, range of the crop's aspect ratio.

    Returns:
        `image`: float32 `[image_size, image_size, 3]` in `[0, 255]`, and, when
        `mask` is given, `(image, mask)` with mask float32
        `[image_size, image_size]` of 0/1.
    """
    import tensorflow as tf

    shape = tf.shape(image)
    top, left, crop_h, crop_w = random_resized_crop_box(
        seed, shape[0], shape[1], scale=scale, ratio=ratio
    )
    size = (image_size, image_size)
    cropped = _resize_image(
        image[top : top + crop_h, left : left + crop_w], size
    )
    if mask is None:
        return cropped
    return cropped, _resize_mask(
        mask[top : top + crop_h, left : left + crop_w], size
    )


def pretrain_transform(
    image: Tensor,
    seed: Tensor,
    image_size: int,
    mask: Tensor | None = None,
    scale: Sequence[float] = DEFAULT_CROP_SCALE,
    ratio: Sequence[float] = DEFAULT_CROP_RATIO,
) -> tuple[Tensor, Tensor | None]:
    """The pretraining augmentation: RandomResizedCrop, flip, normalise.

    Args:
        image: `[H, W, 3]` tensor, uint8 or float in `[0, 255]`.
        seed: int tensor `[2]`; the same seed gives the same output.
        image_size: int, output height and width.
        mask: optional `[H, W]` tensor (0/1), given the same crop and flip.
        scale: pair of floats, RandomResizedCrop area range.
        ratio: pair of floats, RandomResizedCrop aspect-ratio range.

    Returns:
        `(image, mask)`: float32 `[image_size, image_size, 3]` normalised with
        `IMAGENET_MEAN` / `IMAGENET_STD`, and float32 `[image_size,
        image_size]` (0/1) or `None` when no mask was given.
    """
    import tensorflow as tf

    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    if mask is None:
        image = random_resized_crop(
            image, crop_seed, image_size, scale=scale, ratio=ratio
        )
    else:
        image, mask = random_resized_crop(
            image, crop_seed, image_size, mask=mask, scale=scale, ratio=ratio
        )
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.where(flip, tf.reverse(image, axis=[1]), image)
    if mask is not None:
        mask = tf.where(flip, tf.reverse(mask, axis=[1]), mask)
    return normalize(image), mask


def eval_transform(
    image: Tensor, image_size: int, mask: Tensor | None = None, crop_fraction: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """The evaluation transform: resize, center crop, normalise; no randomness.

    The shorter side is resized (bicubic) to `image_size / crop_fraction`,
    keeping the aspect ratio, then the central `image_size` square is kept.
    `crop_fraction=0.875` is the usual ImageNet "resize 256, crop 224".

    Args:
        image: `[H, W, 3]` tensor, uint8 or float in `[0, 255]`.
        image_size: int, output height and width.
        mask: optional `[H, W]` tensor (0/1), given the same resize and crop.
        crop_fraction: float in `(0, 1]`.

    Returns:
        `(image, mask)`: float32 `[image_size, image_size, 3]` normalised, and
        float32 `[image_size, image_size]` (0/1) or `None`.
    """
    import tensorflow as tf

    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"crop_fraction must be in (0, 1], got {crop_fraction!r}."
        )
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    shorter = tf.round(image_size / crop_fraction)
    factor = shorter / tf.minimum(height, width)
    resized_h = tf.maximum(
        tf.cast(tf.round(height * factor), tf.int32), image_size
    )
    resized_w = tf.maximum(
        tf.cast(tf.round(width * factor), tf.int32), image_size
    )
    top = (resized_h - image_size) // 2
    left = (resized_w - image_size) // 2
    size = tf.stack([resized_h, resized_w])
    image = _resize_image(image, size)
    image = image[top : top + image_size, left : left + image_size]
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    if mask is not None:
        mask = _resize_mask(mask, size)
        mask = mask[top : top + image_size, left : left + image_size]
        mask = tf.ensure_shape(mask, [image_size, image_size])
    return normalize(image), mask
