"""`make_dataset`: the one input pipeline for training, evaluation and
notebooks; `evenly_spaced_batch`: a few of its evaluation examples spread
over a split, for pictures.

The dataset names it reads (`"synthetic_objects"`, `"folder:/path"`, TFDS
names) are described in `keras_ccmim.data.sources`; the order of the
training stream in `keras_ccmim.data.training_stream`; sharding between
processes in `keras_ccmim.data.sharding`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import tensorflow as tf

from keras_ccmim.data import augment
from keras_ccmim.data.decode_failures import LOST_RECORD
from keras_ccmim.data.image_header import (
    DEFAULT_MAX_PIXELS,
    check_decoded_pixels,
    check_max_pixels,
)
from keras_ccmim.data.sharding import check_shard, take_share
from keras_ccmim.data.sources import (
    SYNTHETIC_OBJECTS,
    check_name,
    check_positive_int,
    is_folder,
    load_source,
)
from keras_ccmim.data.splits import parse_split, split_bounds
from keras_ccmim.data.tfds_records import decode_records, end_of_pass
from keras_ccmim.data.tfds_source import describe_tfds, load_tfds
from keras_ccmim.data.training_stream import indexed_examples, training_stream
from keras_ccmim.type_aliases import PathLike

# Salt that keeps the augmentation drawn from one `seed` apart from the order.
_AUGMENT_SALT = 0xA06


def _records_source(name, split, training):
    """How `decode_records` names a TFDS split's records in counts and
    messages."""
    use = "training" if training else "evaluation"
    return f"TFDS dataset {name!r} split {split!r} ({use})"


def _decode(image, max_pixels):
    if image.dtype == tf.string:
        image = tf.io.decode_image(
            check_decoded_pixels(image, max_pixels), channels=3, expand_animations=False
        )
    return tf.ensure_shape(image, [None, None, 3])


def _extras(example, mask):
    extras = {"label": tf.cast(example["label"], tf.int32)}
    if mask is not None:
        extras["foreground"] = mask
    return extras


def _evaluation_example(example, image_size, crop_fraction, max_pixels):
    """`(image, extras)` of one example under the evaluation transform."""
    image, mask = augment.eval_transform(
        _decode(example["image"], max_pixels),
        image_size,
        mask=example.get("foreground"),
        crop_fraction=crop_fraction,
    )
    return image, _extras(example, mask)


def make_dataset(
    name: str,
    *,
    split: str = "train",
    batch_size: int,
    image_size: int,
    data_dir: PathLike | None = None,
    training: bool = True,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    repeat: bool = False,
    num_images: int | None = None,
    crop_scale: Sequence[float] = augment.DEFAULT_CROP_SCALE,
    crop_fraction: float = 1.0,
    start_batch: int = 0,
    shard: tuple[int, int] | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> tf.data.Dataset:
    """Builds the batched input pipeline of images and their extras.

    Training (`training=True`) shuffles, then applies
    `augment.pretrain_transform` (RandomResizedCrop with `crop_scale` and
    aspect ratio 3/4-4/3, bicubic; horizontal flip; ImageNet normalisation).
    Evaluation applies `augment.eval_transform` (resize, center crop,
    normalise) in file order.

    Training batches are a function of `seed` and their position in the
    run alone, the same on every backend: each pass over the data is a new
    permutation drawn from `(seed, pass)`, and each image's augmentation is
    drawn from `(seed, position)`. `start_batch=s` starts the stream at the
    batch a run's step `s` trains on, so a resumed run sees exactly the
    batches the killed run would have seen next. Synthetic data and image
    folders are read by index, so nothing in front of that batch is read;
    TFDS record files are read in order (each window of `shuffle_buffer`
    records permuted from `(seed, pass, window)`), so the current pass's
    records in front of it are read again, undecoded. No TF global seed is
    involved.

    A TFDS record whose image fails to decode does not stop the pipeline
    (training or evaluation): its place is filled by a readable record next
    to it in the same pass (see `decode_records`), so batches stay full and
    keep their positions, and it is counted (`skipped_records`). Add
    `SkippedRecordsReport()` to `fit`'s callbacks (`pretrain` does) for one
    warning with the count at the end of training; evaluation reads warn at
    the end of each pass that skipped records. A TFDS file that cannot be
    read to its end (a record that fails its checksum) loses the records of
    the split from there on: their places are filled the same way, they are
    counted apart (`lost_records`), and one warning line names each such
    file and its count. A pass with no readable record stops the pipeline
    with an `InvalidArgumentError` whose one line `describe_data_error`
    gives.

    The dataset feeds `model.fit` on every Keras backend.

    Args:
        name: str, `"synthetic_objects"`, `"folder:/path/to/images"` or a
            TFDS name (`"cifar10_jpeg"`, `"imagenet2012"`).
        split: str, split with optional TFDS slicing (`"train[:90%]"`).
        batch_size: int > 0. The last partial batch is dropped, so every
            batch has this static size.
        image_size: int > 0, output height and width.
        data_dir: str, folder of prepared TFDS datasets; required for TFDS
            names, never downloaded into.
        training: bool, augment and shuffle (True) or evaluation transform.
        seed: int, seed of the shuffle and the augmentation.
        shuffle_buffer: int, when training: the window of TFDS records
            permuted together (capped at the dataset size; synthetic data
            and image folders are permuted whole); 0 turns shuffling off.
        repeat: bool, repeat indefinitely (use with `steps_per_epoch`).
        num_images: optional int; for `synthetic_objects`, the images
            generated for the split before slicing (default 10,000 for
            `"train"`, 2,000 for `"test"`); otherwise a cap on the images
            read after slicing.
        crop_scale: pair of floats, RandomResizedCrop area range (training).
        crop_fraction: float in (0, 1], evaluation center-crop fraction
            (0.875 for the ImageNet "resize 256, crop 224").
        start_batch: int >= 0, training only: the first batch of the
            stream (a resumed run's global step); 0 starts at the beginning.
        shard: optional `(index, count)`, training only: this process's
            share of each global batch of `batch_size` images in a run of
            `count` processes, the images `index * batch_size / count` to
            `(index + 1) * batch_size / count - 1` of the global batch, so
            the shares are disjoint and their concatenation in process order
            is the one-process batch. Synthetic data and image folders then
            decode and augment only the share; TFDS records are decoded
            whole and sliced (the skipped-record fill is a pass property).
        max_pixels: int > 0, the most pixels (height times width) an image
            may decode to, read from its header before decoding, so that a
            small file cannot exhaust memory (a decompression bomb). An
            image folder's scan skips and names the files over it; a TFDS
            record over it is skipped as an undecodable one; an image read
            later that is over it (a folder file changed since its scan)
            stops the pipeline with `InvalidArgumentError`. The default is
            Pillow's (`keras_ccmim.data.image_header.DEFAULT_MAX_PIXELS`).

    Returns:
        A `tf.data.Dataset` of `(images, extras)` (with `shard`, of
        `batch_size // count` images each):
        - `images`: float32 `[batch_size, image_size, image_size, 3]`,
            normalised (see `augment.unnormalize`).
        - `extras`: dict with `"label"` int32 `[batch_size]` (-1 when
            unlabelled) and, for `synthetic_objects` only, `"foreground"`
            float32 `[batch_size, image_size, image_size]` of 0/1.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("image_size", image_size)
    batch_size, image_size = int(batch_size), int(image_size)
    if (
        isinstance(shuffle_buffer, bool)
        or not isinstance(shuffle_buffer, numbers.Integral)
        or shuffle_buffer < 0
    ):
        raise ValueError(
            f"shuffle_buffer must be a non-negative integer, got "
            f"{shuffle_buffer!r}."
        )
    low, high = crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(
            f"crop_scale must satisfy 0 < low <= high <= 1, got {crop_scale!r}; "
            "MAE pretraining uses (0.2, 1.0)."
        )
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(
            f"crop_fraction must be in (0, 1], got {crop_fraction!r}; use 1.0 "
            "for a plain resize or 0.875 for ImageNet's resize 256, crop 224."
        )
    if isinstance(start_batch, bool) or not isinstance(start_batch, numbers.Integral) or (
        start_batch < 0
    ):
        raise ValueError(f"start_batch must be a non-negative integer, got {start_batch!r}.")
    if start_batch and not training:
        raise ValueError(
            "start_batch positions the training stream; evaluation reads the split in "
            "order from its first image. Pass training=True, or start_batch=0."
        )
    max_pixels = check_max_pixels(max_pixels)
    index, count_shards = check_shard(shard, batch_size, training)
    local_batch = batch_size // count_shards
    if training:
        check_name(name)
        if num_images is not None:
            check_positive_int("num_images", num_images)
        dataset, info = training_stream(
            name,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            num_images=num_images,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            repeat=repeat,
            start=int(start_batch) * batch_size,
            max_pixels=max_pixels,
        )
    else:
        dataset, info = load_source(
            name,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            num_images=num_images,
            max_pixels=max_pixels,
        )
    tfds_records = name != SYNTHETIC_OBJECTS and not is_folder(name)
    count = info.num_images
    if count == 0 or (count is not None and count < batch_size and not repeat):
        raise ValueError(
            f"Split {split!r} of {name!r} has {count} image(s), fewer than "
            f"batch_size={batch_size}, and the last partial batch is dropped. "
            "Use a larger split or a smaller batch_size."
        )

    if training:
        augment_key = tf.constant(int(seed) * 65_536 + _AUGMENT_SALT, tf.int64)

        def transform(example, pass_key, position):
            element_seed = tf.random.experimental.stateless_fold_in(
                tf.stack([augment_key, pass_key]), position
            )
            image, mask = augment.pretrain_transform(
                _decode(example["image"], max_pixels),
                element_seed,
                image_size,
                mask=example.get("foreground"),
                scale=crop_scale,
            )
            return image, _extras(example, mask)

        if tfds_records:
            # A record that fails to decode is skipped, its place filled.
            dataset = decode_records(
                dataset,
                transform,
                count=count,
                begin=int(start_batch) * batch_size % count,
                source=_records_source(name, split, training=True),
                max_pixels=max_pixels,
            )
        else:
            if count_shards > 1:
                # This process's share of each global batch, taken before
                # anything is decoded or augmented.
                dataset = take_share(dataset, batch_size, index, local_batch).unbatch()
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        def transform(example):
            return _evaluation_example(example, image_size, crop_fraction, max_pixels)

        if tfds_records:
            records = tf.data.Dataset.zip((
                dataset,
                tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat(),
                tf.data.Dataset.range(count),
            )).concatenate(end_of_pass(0))
            dataset = decode_records(
                records.repeat() if repeat else records,
                lambda example, key, position: transform(example),
                count=count,
                begin=0,
                source=_records_source(name, split, training=False),
                report_each_pass=True,
                max_pixels=max_pixels,
            )
        else:
            if repeat:
                dataset = dataset.repeat()
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if count_shards > 1 and tfds_records:
        dataset = take_share(dataset, batch_size, index, local_batch)
    else:
        dataset = dataset.batch(local_batch, drop_remainder=True)
    if training or tfds_records:
        # The passes are built with flat_map, and TFDS records go through
        # `decode_records`' scan: tf.data cannot infer the length, which
        # Keras and progress bars want.
        start = int(start_batch) * batch_size
        batches = (
            tf.data.INFINITE_CARDINALITY if repeat else max(count - start, 0) // batch_size
        )
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def evenly_spaced_batch(
    name,
    *,
    split="train",
    count,
    image_size,
    data_dir=None,
    num_images=None,
    crop_fraction=1.0,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """One batch of `count` examples spread evenly over a split, for pictures.

    The examples at positions `(2i + 1) * N // (2 * count)`, `i < count`, of
    the split's evaluation order (`make_dataset(..., training=False)`, whose
    transform they get), `N` its number of images: the centres of `count`
    equal parts of the split, so a folder whose files are listed class by
    class is pictured across its classes, not by its first images.
    Synthetic data and image folders are read by index; a TFDS split by
    one-record slices, so nothing else of it is read. A TFDS record that
    cannot be read or decoded is left out of the batch.

    Args:
        name: the dataset, as in `make_dataset`.
        split: as in `make_dataset`.
        count: int > 0, the examples wanted; a split with fewer gives all
            of its own.
        image_size: as in `make_dataset`.
        data_dir: as in `make_dataset`.
        num_images: as in `make_dataset`.
        crop_fraction: as in `make_dataset`.
        max_pixels: as in `make_dataset`.

    Returns:
        `(images, extras)` as one batch of `make_dataset(...,
        training=False)`: float32 `[B, image_size, image_size, 3]` and the
        extras, `B = min(count, N)` (less for TFDS records left out).
    """
    check_name(name)
    check_positive_int("count", count)
    check_positive_int("image_size", image_size)
    max_pixels = check_max_pixels(max_pixels)
    indexed = indexed_examples(
        name, split=split, image_size=int(image_size), num_images=num_images,
        max_pixels=max_pixels,
    )
    if indexed is not None:
        lookup, info = indexed
    else:
        info = describe_tfds(name, split=split, data_dir=data_dir, num_images=num_images)
    total = info.num_images or 0
    if total == 0:
        raise ValueError(f"Split {split!r} of {name!r} has no images to picture.")
    count = min(int(count), total)
    positions = [(2 * i + 1) * total // (2 * count) for i in range(count)]
    if indexed is not None:
        examples = tf.data.Dataset.from_tensor_slices(
            tf.constant(positions, tf.int64)).map(lookup)
    else:
        # TFDS reads a one-record slice of the named split without the rest.
        base = parse_split(split)[0]
        size = describe_tfds(name, split=base, data_dir=data_dir).num_images
        _, start, _ = split_bounds(split, size)
        examples = None
        for position in positions:
            one, _ = load_tfds(
                name, split=f"{base}[{start + position}:{start + position + 1}]",
                data_dir=data_dir,
            )
            examples = one if examples is None else examples.concatenate(one)
        examples = examples.filter(lambda example: example["label"] != LOST_RECORD)
    dataset = examples.map(
        lambda example: _evaluation_example(
            example, int(image_size), crop_fraction, max_pixels)
    ).ignore_errors()
    for batch in dataset.batch(count).take(1):
        return batch
    raise ValueError(
        f"None of the {count} records picked from split {split!r} of {name!r} could be read "
        "and decoded. Check the dataset's files (evaluation reads name the damaged ones)."
    )
