"""`make_dataset`: the one input pipeline for training, evaluation and notebooks.

Dataset names:
- `"synthetic_objects"`: built-in shapes with foreground masks; splits
  `"train"` and `"test"` are different fixed sets (see
  `load_synthetic_objects`).
- `"folder:/path/to/images"`: an image folder; one split, `"train"`,
  sliced for held-out sets (see `load_image_folder`).
- anything else: a TFDS dataset prepared under `data_dir` (`"cifar10_jpeg"`,
  `"imagenet2012"`).

Splits accept TFDS slicing everywhere: `"train[:90%]"`, `"train[45000:]"`.
"""

import dataclasses
import numbers

import tensorflow as tf

from keras_ccmim.data import augment
from keras_ccmim.data.image_folder import (
    describe_image_folder,
    image_folder_files,
    load_image_folder,
    read_image_folder_manifest,
    write_image_folder_manifest,
)
from keras_ccmim.data.synthetic_objects import (
    describe_synthetic_objects,
    load_synthetic_objects,
    synthetic_objects_arrays,
)
from keras_ccmim.data.tfds_source import (
    decode_records,
    describe_tfds,
    end_of_pass,
    load_tfds,
)

SYNTHETIC_OBJECTS = "synthetic_objects"
FOLDER_PREFIX = "folder:"


def _check_positive_int(argument, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(
            f"{argument} must be a positive integer, got {value!r}. Pass e.g. "
            f"{argument}=32."
        )


def _folder_path(name):
    path = name[len(FOLDER_PREFIX) :]
    if not path:
        raise ValueError(
            "Dataset name 'folder:' has no path. Write 'folder:/path/to/images'."
        )
    return path


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Dataset name must be a non-empty string, got {name!r}. Use "
            "'synthetic_objects', 'folder:/path/to/images' or a TFDS name."
        )


def _is_folder(name):
    return isinstance(name, str) and name.startswith(FOLDER_PREFIX)


def _records_source(name, split, training):
    """How `decode_records` names a TFDS split's records in counts and
    messages."""
    use = "training" if training else "evaluation"
    return f"TFDS dataset {name!r} split {split!r} ({use})"


def write_dataset_manifest(name, path):
    """Writes the manifest of a `"folder:..."` dataset's image folder (its
    readable files with labels, the count and names of the skipped ones)
    as JSON to `path`, from this process's scan of the folder.

    Returns:
        `path`, or None for datasets that are not image folders (nothing to
        scan) and for a `path` inside the image folder (never written to).
    """
    if not _is_folder(name):
        return None
    return write_image_folder_manifest(_folder_path(name), path)


def read_dataset_manifest(name, path):
    """Lets this process reuse the manifest `write_dataset_manifest` wrote
    to `path` for a `"folder:..."` dataset, while the folder is unchanged.

    Returns:
        bool, whether it was taken (False for other datasets, and for a
        missing, damaged or outdated manifest: the folder is scanned).
    """
    if not _is_folder(name) or not name[len(FOLDER_PREFIX) :]:
        return False
    return read_image_folder_manifest(path)


def describe_dataset(
    name, *, split="train", data_dir=None, num_images=None, image_size=None
):
    """Describes a split of a dataset without building a pipeline.

    Args:
        name: str, see the module docstring.
        split: str, split with optional slicing.
        data_dir: str, folder of prepared TFDS datasets (TFDS names only).
        num_images: optional int, as in `make_dataset`.
        image_size: optional int, recorded as the image shape of
            `synthetic_objects` (generated at that size).

    Returns:
        A `DatasetInfo` with the image count (`num_images`), `num_classes`
        and `class_names` (`None` when unlabelled) and `has_foreground`.
        Image folders are fully scanned (each file decoded once per
        process; see `scan_image_folder`).
    """
    _check_name(name)
    if name == SYNTHETIC_OBJECTS:
        return describe_synthetic_objects(split, num_images, image_size)
    if name.startswith(FOLDER_PREFIX):
        return describe_image_folder(
            _folder_path(name), split=split, num_images=num_images, name=name
        )
    return describe_tfds(name, split=split, data_dir=data_dir, num_images=num_images)


def load_source(
    name,
    *,
    split="train",
    data_dir=None,
    image_size=32,
    num_images=None,
    shuffle_files=False,
    seed=0,
):
    """Reads a split of a dataset, unbatched and untransformed.

    Args:
        name: str, see the module docstring.
        split: str, split with optional slicing.
        data_dir: str, folder of prepared TFDS datasets (TFDS names only).
        image_size: int, size `synthetic_objects` images are drawn at.
        num_images: optional int; for `synthetic_objects`, the images
            generated for the split before slicing; otherwise a cap on the
            images kept after slicing.
        shuffle_files: bool, read TFDS files / folder images in a seeded
            random order.
        seed: int, seed of that order.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts with `"image"`
        (uint8 `[H, W, 3]` or tf.string encoded bytes), `"label"` (int32
        scalar, -1 when unlabelled) and, for `synthetic_objects`,
        `"foreground"` (uint8 `[H, W]`); and its `DatasetInfo`.
    """
    _check_name(name)
    if num_images is not None:
        _check_positive_int("num_images", num_images)
    if name == SYNTHETIC_OBJECTS:
        return load_synthetic_objects(
            split=split, image_size=image_size, num_images=num_images
        )
    if name.startswith(FOLDER_PREFIX):
        return load_image_folder(
            _folder_path(name),
            split=split,
            num_images=num_images,
            shuffle_files=shuffle_files,
            seed=seed,
            name=name,
        )
    return load_tfds(
        name,
        split=split,
        data_dir=data_dir,
        shuffle_files=shuffle_files,
        seed=seed,
        num_images=num_images,
    )


def _decode(image):
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _extras(example, mask):
    extras = {"label": tf.cast(example["label"], tf.int32)}
    if mask is not None:
        extras["foreground"] = mask
    return extras


# Salts that keep the streams drawn from one `seed` apart.
_ORDER_SALT = 0x0D5E
_AUGMENT_SALT = 0xA06


def _indexed_examples(name, *, split, image_size, num_images):
    """`(lookup, info)` for the sources read by index (`synthetic_objects`,
    image folders): `lookup(index)` gives the example at an int64 index;
    None for TFDS record files, which can only be read in order."""
    if name == SYNTHETIC_OBJECTS:
        arrays, info = synthetic_objects_arrays(
            split=split, image_size=image_size, num_images=num_images
        )
        tensors = {key: tf.constant(value) for key, value in arrays.items()}

        def lookup(index):
            return {key: tf.gather(value, index) for key, value in tensors.items()}

        return lookup, dataclasses.replace(info, num_images=len(arrays["label"]))
    if name.startswith(FOLDER_PREFIX):
        files, labels, info = image_folder_files(
            _folder_path(name), split=split, num_images=num_images, name=name
        )
        paths = tf.constant(files, tf.string, shape=[len(files)])
        labels = tf.constant(labels, tf.int32)

        def lookup(index):
            return {
                "image": tf.io.read_file(tf.gather(paths, index)),
                "label": tf.gather(labels, index),
            }

        return lookup, info
    return None


def _training_stream(name, *, split, data_dir, image_size, num_images, seed,
                     shuffle_buffer, repeat, start):
    """The training examples of a run from stream position `start` on, as
    `(example, pass_key, position)`: the pass over the data it belongs to
    and its position in that pass (int64 scalars).

    With `repeat`, pass `d` (positions `d * N` to `(d + 1) * N - 1` of N
    images) has key `d`: the stream is a function of `seed` and the
    position alone, so one started at `start` is the tail of one started
    at 0. Without it, each iteration over the dataset (each `fit` epoch) is
    one pass with a new key drawn from `seed` (`tf.data.Dataset.random`).
    A pass is a permutation of the images drawn from `(seed, key)`. Indexed
    sources compute it per position (`tf.random.experimental.index_shuffle`),
    so starting late reads nothing in front of `start`; TFDS record files
    are read in file order, each window of `shuffle_buffer` records put in
    a stateless random order drawn from `(seed, key, window)`, so the
    records of the pass in front of `start` are read again, undecoded, and
    dropped. TFDS examples keep their encoded images and each pass ends
    with `end_of_pass`, for `decode_records`.
    """
    indexed = _indexed_examples(
        name, split=split, image_size=image_size, num_images=num_images
    )
    if indexed is not None:
        lookup, info = indexed
    else:
        raw, info = load_tfds(
            name, split=split, data_dir=data_dir, shuffle_files=False, num_images=num_images
        )
    count = info.num_images or 0
    first_pass, offset = divmod(start, count) if count else (0, 0)
    order_key = tf.constant(int(seed) * 65_536 + _ORDER_SALT, tf.int64)
    if repeat:
        keys = tf.data.Dataset.range(first_pass, tf.int64.max)
        begins = tf.data.Dataset.from_tensors(tf.constant(offset, tf.int64)).concatenate(
            tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat())
    else:
        keys = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True)
        keys = keys.take(0 if first_pass else 1)
        begins = tf.data.Dataset.from_tensors(tf.constant(offset, tf.int64))
    passes = tf.data.Dataset.zip((keys, begins))

    if indexed is not None:
        shuffle = shuffle_buffer > 0 and count > 1

        def positions(key, begin):
            keyed = tf.data.Dataset.from_tensors(key).repeat()
            return tf.data.Dataset.zip((keyed, tf.data.Dataset.range(begin, count)))

        def example_at(key, position):
            index = position
            if shuffle:
                index = tf.random.experimental.index_shuffle(
                    position, tf.stack([order_key, key]), tf.constant(count - 1, tf.int64)
                )
            return lookup(index), key, position

        stream = passes.flat_map(positions).map(
            example_at, num_parallel_calls=tf.data.AUTOTUNE
        )
        return stream, info

    buffer = min(shuffle_buffer, count)

    def shuffled(key):
        """Pass `key`'s records: each window of `buffer` consecutive records
        in a stateless random order drawn from (seed, pass, window), so the
        order needs no TF global seed and is the same on every backend."""

        def permute(index, window):
            size = tf.shape(tf.nest.flatten(window)[0])[0]
            draw = tf.random.stateless_uniform(
                [size], tf.stack([order_key, key * 1_000_003 + index]), dtype=tf.float32
            )
            order = tf.argsort(draw)
            return tf.data.Dataset.from_tensor_slices(
                tf.nest.map_structure(lambda t: tf.gather(t, order), window)
            )

        return raw.batch(buffer).enumerate().flat_map(permute)

    def one_pass(key, begin):
        records = shuffled(key) if buffer else raw
        keyed = tf.data.Dataset.from_tensors(key).repeat()
        return tf.data.Dataset.zip(
            (records.skip(begin), keyed, tf.data.Dataset.range(begin, count))
        ).concatenate(end_of_pass(key))

    return passes.flat_map(one_pass), info


def _check_shard(shard, batch_size, training):
    """`(index, count)` of a valid `shard` (None: `(0, 1)`)."""
    if shard is None:
        return 0, 1
    try:
        index, count = (int(v) for v in shard)
    except (TypeError, ValueError):
        raise ValueError(f"shard must be (index, count), got {shard!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {shard!r}: index must be in [0, count) with count >= 1.")
    if count > 1 and not training:
        raise ValueError(
            "shard splits the training stream between processes; evaluation batches are "
            "read whole. Pass training=True, or shard=None."
        )
    if batch_size % count:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) is not divisible by the {count} "
            f"processes of shard={shard!r}. Use a multiple of {count}."
        )
    return index, count


def _take_share(dataset, batch_size, index, local_batch):
    """Batches of `batch_size` consecutive elements, each cut to its
    `index`-th slice of `local_batch`."""
    begin = index * local_batch
    return dataset.batch(batch_size, drop_remainder=True).map(
        lambda *parts: tf.nest.map_structure(
            lambda t: t[begin : begin + local_batch], parts if len(parts) > 1 else parts[0]
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def make_dataset(
    name,
    *,
    split="train",
    batch_size,
    image_size,
    data_dir=None,
    training=True,
    seed=0,
    shuffle_buffer=10_000,
    repeat=False,
    num_images=None,
    crop_scale=augment.DEFAULT_CROP_SCALE,
    crop_fraction=1.0,
    start_batch=0,
    shard=None,
):
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
    the end of each pass that skipped records.

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

    Returns:
        A `tf.data.Dataset` of `(images, extras)` (with `shard`, of
        `batch_size // count` images each):
        - `images`: float32 `[batch_size, image_size, image_size, 3]`,
          normalised (see `augment.unnormalize`).
        - `extras`: dict with `"label"` int32 `[batch_size]` (-1 when
          unlabelled) and, for `synthetic_objects` only, `"foreground"`
          float32 `[batch_size, image_size, image_size]` of 0/1.
    """
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("image_size", image_size)
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
    index, count_shards = _check_shard(shard, batch_size, training)
    local_batch = batch_size // count_shards
    if training:
        _check_name(name)
        if num_images is not None:
            _check_positive_int("num_images", num_images)
        dataset, info = _training_stream(
            name,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            num_images=num_images,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            repeat=repeat,
            start=int(start_batch) * batch_size,
        )
    else:
        dataset, info = load_source(
            name,
            split=split,
            data_dir=data_dir,
            image_size=image_size,
            num_images=num_images,
        )
    tfds_records = name != SYNTHETIC_OBJECTS and not _is_folder(name)
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
                _decode(example["image"]),
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
            )
        else:
            if count_shards > 1:
                # This process's share of each global batch, taken before
                # anything is decoded or augmented.
                dataset = _take_share(dataset, batch_size, index, local_batch).unbatch()
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        def transform(example):
            image, mask = augment.eval_transform(
                _decode(example["image"]),
                image_size,
                mask=example.get("foreground"),
                crop_fraction=crop_fraction,
            )
            return image, _extras(example, mask)

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
            )
        else:
            if repeat:
                dataset = dataset.repeat()
            dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    if count_shards > 1 and tfds_records:
        dataset = _take_share(dataset, batch_size, index, local_batch)
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
