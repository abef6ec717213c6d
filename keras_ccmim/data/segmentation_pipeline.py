"""Batches for segmentation: joint image/mask augmentation, resizing, order.

Training: a random scale crop (a RandomResizedCrop box, area fraction in
`SEGMENTATION_CROP_SCALE`) and a horizontal flip, both applied to the image
and its mask together: the mask is cut with the same box, resized with
nearest-neighbour interpolation (labels are never blended) on the same
pixel grid and flipped with the same coin. Evaluation: the whole image and
mask resized to `image_size` (bicubic / nearest), no randomness.

Every random choice is a stateless function of `seed` and the example's
position in the training stream, so `start_batch` resumes a run on the
batches an uninterrupted one would have read.
"""

from __future__ import annotations

import tensorflow as tf

from keras_ccmim.data.augment import (
    DEFAULT_CROP_RATIO,
    _resize_image,
    normalize,
    random_resized_crop_box,
)
from keras_ccmim.data.segmentation_sources import SegmentationInfo, load_segmentation_source
from keras_ccmim.type_aliases import PathLike

SEGMENTATION_CROP_SCALE = (0.25, 1.0)
# Examples kept by the training shuffle buffer.
_SHUFFLE_BUFFER = 10_000


def _resize_mask(mask, size):
    """Nearest-neighbour resize of a `[H, W]` label map."""
    mask = tf.image.resize(mask[..., None], size, method="nearest")
    return tf.cast(mask[..., 0], tf.int32)


def joint_random_crop_flip(image, mask, seed, image_size, scale=SEGMENTATION_CROP_SCALE,
                           ratio=DEFAULT_CROP_RATIO):
    """The training transform of one example.

    Args:
        image: `[H, W, 3]`, values in `[0, 255]`.
        mask: `[H, W]` integer labels.
        seed: int tensor `[2]`.
        image_size: output height and width.

    Returns:
        `(image, mask)`: float32 `[S, S, 3]` normalised, int32 `[S, S]`.
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    shape = tf.shape(image)
    top, left, height, width = random_resized_crop_box(crop_seed, shape[0], shape[1],
                                                       scale=scale, ratio=ratio)
    size = (image_size, image_size)
    image = _resize_image(image[top: top + height, left: left + width], size)
    mask = _resize_mask(mask[top: top + height, left: left + width], size)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.where(flip, tf.reverse(image, axis=[1]), image)
    mask = tf.where(flip, tf.reverse(mask, axis=[1]), mask)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    return normalize(image), tf.ensure_shape(mask, [image_size, image_size])


def resize_example(image, mask, image_size):
    """The evaluation transform: image and mask resized to `image_size`."""
    size = (image_size, image_size)
    image = tf.ensure_shape(_resize_image(image, size), [image_size, image_size, 3])
    return normalize(image), tf.ensure_shape(_resize_mask(mask, size), [image_size, image_size])


def make_segmentation_dataset(
    name: str,
    *,
    split: str,
    batch_size: int,
    image_size: int,
    training: bool,
    seed: int = 0,
    start_batch: int = 0,
    data_dir: PathLike | None = None,
    num_images: int | None = None,
    num_classes: int | None = None,
) -> tuple[tf.data.Dataset, SegmentationInfo]:
    """`(dataset, info)`: batches `(images float32 [B, S, S, 3], labels
    int32 [B, S, S])` of a segmentation source (see
    `keras_ccmim.data.segmentation_sources`).

    Training batches repeat forever in a seeded shuffled order, all full;
    `start_batch` skips that many (resuming). Evaluation batches are one
    pass in order, the last one possibly smaller.
    """
    dataset, info = load_segmentation_source(
        name, split=split, data_dir=data_dir, image_size=image_size, num_images=num_images,
        num_classes=num_classes, shuffle_files=False, seed=seed,
    )
    if not training:
        dataset = dataset.map(lambda e: resize_example(e["image"], e["mask"], image_size),
                              num_parallel_calls=tf.data.AUTOTUNE)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE), info
    buffer = max(min(int(info.num_images or _SHUFFLE_BUFFER), _SHUFFLE_BUFFER), 1)
    stream = dataset.repeat().shuffle(buffer, seed=int(seed)).enumerate()
    stream = stream.skip(int(start_batch) * int(batch_size))

    def transform(index, example):
        example_seed = tf.stack([tf.constant(int(seed), tf.int64), index])
        return joint_random_crop_flip(example["image"], example["mask"], example_seed,
                                      image_size)

    stream = stream.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return stream.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE), info
