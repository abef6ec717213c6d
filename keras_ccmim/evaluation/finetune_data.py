"""The fine-tuning input pipeline: MAE's recipe on top of `make_dataset`.

Per image: RandomResizedCrop (scale 0.08-1) and flip (from `make_dataset`),
RandAugment (`keras.layers.RandAugment`, two ops, magnitude `m` as
`factor=m/10`), ImageNet normalisation, random erasing (timm's "pixel" mode:
a box of 2-33% of the image, aspect ratio 0.3-3.3, filled with normal
noise). Per batch: label smoothing, then MixUp (lambda ~ Beta(0.8, 0.8)) or
CutMix (lambda ~ Beta(1, 1), corrected to the box's area), chosen with
probability 1/2 when both are on, each image mixed with the image at the
mirrored batch position. Labels come out as soft `[B, C]` targets.

Every random choice is a stateless TF op drawn from `seed` and the
example's (or batch's) position in the run's stream, RandAugment's too (a
`keras.layers.RandAugment` whose draws come from the image's seed, see
`PositionedRandAugment`): the batches are a function of `seed` and their
position alone: `start_batch=s` starts at the batch a run's step `s`
trains on, so a resumed fine-tuning reads what the killed one would have.
The pipeline runs in `tf.data` whatever the Keras backend.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from keras_ccmim.data import augment as data_augment
from keras_ccmim.data.pipeline import make_dataset
from keras_ccmim.type_aliases import PathLike

FINETUNE_CROP_SCALE = (0.08, 1.0)
ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_LOG_RATIO = (math.log(0.3), math.log(1.0 / 0.3))
# Salts that keep the per-image and per-batch streams drawn from one `seed`
# apart (and apart from `make_dataset`'s).
_IMAGE_SALT = 0xF1E
_BATCH_SALT = 0xB7C


class _SeedDraws(keras.random.SeedGenerator):
    """Stands in for a layer's `SeedGenerator` while a `tf.data` function is
    traced: draw `n` is `stateless_fold_in(seed, n)`, so what the layer draws
    is a function of the `seed` tensor alone. It holds no state variable
    (`SeedGenerator.__init__` is not called); Keras' random ops only call
    `next()` on it."""

    def __init__(self, seed):
        self._seed = seed
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


class PositionedRandAugment(keras.layers.RandAugment):
    """`keras.layers.RandAugment` whose random choices for one image are
    drawn from a given stateless seed (`augment(image, seed)`), not from the
    layer's `SeedGenerator`, whose state would advance in whatever order
    `tf.data`'s parallel calls run (so neither reproducible nor positionable).

    Keras' RandAugment draws every choice (which ops, and each op's
    parameters) through `self._get_seed_generator()`; this layer hands out
    `_SeedDraws(seed)` there while `augment` is traced.
    """

    def augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """RandAugment of one image `[H, W, C]` in `value_range`, drawn from
        `seed` (int tensor `[2]`)."""
        # object.__setattr__: a Layer would track a SeedGenerator attribute.
        object.__setattr__(self, "_positioned_draws", _SeedDraws(seed))
        try:
            return self(image, training=True)
        finally:
            object.__setattr__(self, "_positioned_draws", None)

    def _get_seed_generator(self, backend=None):
        draws = getattr(self, "_positioned_draws", None)
        if draws is None:
            raise RuntimeError(
                "PositionedRandAugment draws from a per-image seed: call augment(image, "
                "seed), not the layer itself."
            )
        return draws


def _sample_beta(seed, alpha):
    """One Beta(alpha, alpha) draw from a stateless seed `[2]`."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    a = tf.random.stateless_gamma([], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
    """timm's random erasing ("pixel" mode, one box) of a normalised image."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=6))
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = h_f * w_f * tf.random.stateless_uniform([], seeds[0], *ERASE_AREA)
    ratio = tf.exp(tf.random.stateless_uniform([], seeds[1], *ERASE_LOG_RATIO))
    box_h = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), 1, height)
    box_w = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), 1, width)
    top = tf.random.stateless_uniform([], seeds[2], 0, height - box_h + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([], seeds[3], 0, width - box_w + 1, dtype=tf.int32)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
    noise = tf.random.stateless_normal(tf.shape(image), seeds[4])
    apply = tf.random.stateless_uniform([], seeds[5]) < probability
    return tf.where(inside & apply, noise, image)


def mix_batch(
    images: tf.Tensor,
    targets: tf.Tensor,
    seed: tf.Tensor,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp or CutMix of a batch with its mirror image (timm's batch mode).

    Args:
        images: `[B, H, W, C]`.
        targets: `[B, C]` soft labels.
        seed: int tensor `[2]`.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns one off.

    Returns:
        `(images, targets)` mixed with the same lambda.
    """
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return images, targets
    images, targets = tf.cast(images, tf.float32), tf.cast(targets, tf.float32)
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, num=5))
    flipped, flipped_targets = tf.reverse(images, [0]), tf.reverse(targets, [0])

    def mixup():
        lam = _sample_beta(seeds[0], mixup_alpha)
        return lam * images + (1.0 - lam) * flipped, lam

    def cutmix():
        lam = _sample_beta(seeds[1], cutmix_alpha)
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        cut = tf.sqrt(1.0 - lam)
        cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
        cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
        cy = tf.random.stateless_uniform([], seeds[2], 0, height, dtype=tf.int32)
        cx = tf.random.stateless_uniform([], seeds[3], 0, width, dtype=tf.int32)
        top, bottom = tf.maximum(cy - cut_h // 2, 0), tf.minimum(cy + cut_h // 2, height)
        left, right = tf.maximum(cx - cut_w // 2, 0), tf.minimum(cx + cut_w // 2, width)
        rows = tf.range(height)[None, :, None, None]
        cols = tf.range(width)[None, None, :, None]
        inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
        box_area = tf.cast((bottom - top) * (right - left), tf.float32)
        lam = 1.0 - box_area / tf.cast(height * width, tf.float32)
        return tf.where(inside, flipped, images), lam

    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.stateless_uniform([], seeds[4]) < 0.5
        mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
    elif cutmix_alpha > 0:
        mixed, lam = cutmix()
    else:
        mixed, lam = mixup()
    return mixed, lam * targets + (1.0 - lam) * flipped_targets


def check_augmentation(
    rand_augment_magnitude: float,
    random_erasing_probability: float,
    mixup_alpha: float,
    cutmix_alpha: float,
    label_smoothing: float,
) -> None:
    """Raises a ValueError naming the first augmentation argument of
    `make_finetune_dataset` out of its range."""
    if not 0 <= rand_augment_magnitude <= 10:
        raise ValueError(
            f"rand_augment_magnitude must be in [0, 10], got {rand_augment_magnitude}."
        )
    if not 0 <= random_erasing_probability <= 1:
        raise ValueError(
            f"random_erasing_probability must be in [0, 1], got {random_erasing_probability}."
        )
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
    if mixup_alpha < 0 or cutmix_alpha < 0:
        raise ValueError(
            f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha}, {cutmix_alpha}."
        )


def make_finetune_dataset(
    name: str,
    *,
    split: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    data_dir: PathLike | None = None,
    seed: int = 0,
    num_images: int | None = None,
    rand_augment_magnitude: float = 9,
    rand_augment_ops: int = 2,
    random_erasing_probability: float = 0.25,
    mixup_alpha: float = 0.8,
    cutmix_alpha: float = 1.0,
    label_smoothing: float = 0.1,
    start_batch: int = 0,
) -> tf.data.Dataset:
    """Endless training batches `(images [B, H, W, 3], soft targets [B, C])`.

    Batch `k` is a function of `seed` and `start_batch + k` alone (see the
    module docstring): `start_batch=s` gives the tail, from batch `s` on, of
    the stream `start_batch=0` gives.

    Args:
        name, split, batch_size, image_size, data_dir, seed, num_images,
            start_batch: as in `keras_ccmim.data.make_dataset` (training,
            repeated).
        num_classes: int `C` of the targets.
        rand_augment_magnitude: RandAugment `m` in [0, 10]; 0 turns it off.
        rand_augment_ops: RandAugment ops per image.
        random_erasing_probability: per image, 0 turns it off.
        mixup_alpha, cutmix_alpha: Beta parameters; 0 turns one off.
        label_smoothing: mass spread uniformly over the classes.
    """
    check_augmentation(
        rand_augment_magnitude, random_erasing_probability, mixup_alpha, cutmix_alpha,
        label_smoothing,
    )
    dataset = make_dataset(
        name,
        split=split,
        batch_size=batch_size,
        image_size=image_size,
        data_dir=data_dir,
        training=True,
        seed=seed,
        repeat=True,
        num_images=num_images,
        crop_scale=FINETUNE_CROP_SCALE,
        start_batch=start_batch,
    )
    rand_augment = None
    if rand_augment_magnitude > 0:
        rand_augment = PositionedRandAugment(
            value_range=(0, 1),
            num_ops=int(rand_augment_ops),
            factor=rand_augment_magnitude / 10.0,
            seed=seed,
        )
    image_key = tf.constant([int(seed), _IMAGE_SALT], tf.int64)
    batch_key = tf.constant([int(seed), _BATCH_SALT], tf.int64)

    def per_image(position, image, label):
        image_seed = tf.random.experimental.stateless_fold_in(image_key, position)
        augment_seed, erase_seed = tf.unstack(
            tf.random.experimental.stateless_split(image_seed, num=2))
        if rand_augment is not None:
            image = image * data_augment.IMAGENET_STD + data_augment.IMAGENET_MEAN
            image = tf.clip_by_value(image, 0.0, 1.0)
            image = tf.convert_to_tensor(rand_augment.augment(image, augment_seed))
            image = (image - data_augment.IMAGENET_MEAN) / data_augment.IMAGENET_STD
        if random_erasing_probability > 0:
            image = random_erasing(image, erase_seed, random_erasing_probability)
        return tf.cast(image, tf.float32), label

    def per_batch(index, images, labels):
        batch_seed = tf.random.experimental.stateless_fold_in(batch_key, index)
        one_hot = tf.one_hot(labels, num_classes)
        targets = one_hot * (1.0 - label_smoothing) + label_smoothing / num_classes
        return mix_batch(images, targets, batch_seed, mixup_alpha, cutmix_alpha)

    # Positions in the run's stream: image `start_batch * B + i`, batch
    # `start_batch + k`.
    dataset = dataset.unbatch().map(lambda image, extras: (image, extras["label"]))
    dataset = dataset.enumerate(start=int(start_batch) * int(batch_size)).map(
        lambda position, example: per_image(position, *example),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.enumerate(start=int(start_batch)).map(
        lambda index, batch: per_batch(index, *batch), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
