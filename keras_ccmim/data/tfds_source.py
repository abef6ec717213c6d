"""Any prepared TFDS image dataset, read from a `data_dir` without download.

Works with datasets known to the TFDS catalogue (`imagenet2012`, once
prepared in `data_dir`) and with datasets that exist only as prepared files
(`cifar10_jpeg`). Images are kept encoded and
decoded in the pipeline's parallel map, so shuffle buffers stay small.

A record whose image fails to decode does not stop the pipeline, nor does
a damaged file: its lost records are counted and stood in for (see
`keras_ccmim.data.decode_failures` and `keras_ccmim.data.tfds_records`).
"""

from __future__ import annotations

import difflib
import os

import tensorflow as tf

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.splits import parse_split
from keras_ccmim.data.tfds_files import read_record_files
from keras_ccmim.type_aliases import PathLike

# Names `make_dataset` resolves without TFDS, listed in error messages.
BUILTIN_SOURCES = ("synthetic_objects", "folder:<path>")


def _local_datasets(data_dir):
    """Dataset folders prepared under `data_dir`."""
    try:
        return sorted(
            entry
            for entry in os.listdir(data_dir)
            if os.path.isdir(os.path.join(data_dir, entry))
            and not entry.startswith(".")
        )
    except OSError:
        return []


def _unknown_dataset_error(name, data_dir):
    import tensorflow_datasets as tfds

    local = _local_datasets(data_dir)
    close = difflib.get_close_matches(
        name, list(BUILTIN_SOURCES) + local + list(tfds.list_builders()), n=5
    )
    hint = f" Did you mean one of {close}?" if close else ""
    return ValueError(
        f"Unknown dataset {name!r}. Valid names are {BUILTIN_SOURCES[0]!r}, "
        f"{BUILTIN_SOURCES[1]!r}, or a TFDS dataset prepared under data_dir "
        f"{data_dir!r} (found there: {local}; the TFDS catalogue is "
        f"tfds.list_builders()).{hint}"
    )


def _check_data_dir(name, data_dir):
    if data_dir is None:
        raise ValueError(
            f"Dataset {name!r} is read with TFDS and needs data_dir: pass "
            "data_dir= (the binaries' --data_dir) to the folder holding the "
            "prepared TFDS datasets. Nothing is downloaded. Or use "
            "'synthetic_objects' or 'folder:<path>'."
        )
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(
            f"data_dir {data_dir!r} for dataset {name!r} does not exist. "
            "Pass data_dir= (the binaries' --data_dir) to the folder holding "
            "the prepared TFDS datasets."
        )
    return data_dir


def tfds_builder(name, data_dir):
    """A TFDS builder for a dataset prepared under `data_dir`.

    Args:
        name: str, TFDS name, optionally with config and version
            (`"imagenet2012:5.1.0"`).
        data_dir: str, folder that holds prepared TFDS datasets.

    Returns:
        A `tfds.core.DatasetBuilder` whose data exist.

    Raises:
        ValueError: for a missing `data_dir`, an unknown name, or a dataset
            that is not prepared there.
    """
    import tensorflow_datasets as tfds

    data_dir = _check_data_dir(name, data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError:  # DatasetNotFoundError, or a name TFDS cannot parse.
        raise _unknown_dataset_error(name, data_dir) from None
    if not builder.is_prepared():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared under data_dir "
            f"{data_dir!r} (expected files in {builder.data_dir!r}). Prepare it "
            f"first (e.g. `tfds build {name} --data_dir={data_dir}`, with any "
            "manual downloads it needs) or point data_dir at a folder that "
            "holds it."
        )
    return builder


def _feature_keys(builder):
    """The image feature key and the class label key (or `None`)."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    supervised = builder.info.supervised_keys
    if (
        supervised
        and len(supervised) == 2
        and isinstance(supervised[0], str)
        and isinstance(features[supervised[0]], tfds.features.Image)
    ):
        label_key = supervised[1] if isinstance(supervised[1], str) else None
        if label_key is not None and not isinstance(
            features[label_key], tfds.features.ClassLabel
        ):
            label_key = None
        return supervised[0], label_key
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if not image_keys:
        raise ValueError(
            f"TFDS dataset {builder.name!r} has no image feature (features: "
            f"{list(features.keys())}); only image datasets are supported."
        )
    label_keys = [
        k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)
    ]
    return image_keys[0], (label_keys[0] if label_keys else None)


def _num_examples(builder, split):
    splits = builder.info.splits
    base = parse_split(split)[0]
    if base not in splits:
        raise ValueError(
            f"Split {split!r} not found in TFDS dataset {builder.name!r}; "
            f"its splits are {sorted(splits.keys())}. Slice one of them "
            "for a held-out set, e.g. 'train[45000:]'."
        )
    try:
        return splits[split].num_examples
    except (KeyError, ValueError, AssertionError) as error:
        raise ValueError(f"Invalid split {split!r}: {error}") from None


def _image_shape(builder, image_key):
    shape = builder.info.features[image_key].shape
    return tuple(shape) if None not in shape else None


def _describe(builder, name, split, num_images):
    image_key, label_key = _feature_keys(builder)
    count = _num_examples(builder, split)
    if num_images is not None:
        count = min(count, num_images)
    label = builder.info.features[label_key] if label_key else None
    return DatasetInfo(
        name=name,
        split=split,
        num_images=count,
        num_classes=label.num_classes if label else None,
        class_names=tuple(label.names) if label else None,
        image_shape=_image_shape(builder, image_key),
    )


def describe_tfds(
    name: str, *, split: str, data_dir: PathLike | None, num_images: int | None = None
) -> DatasetInfo:
    """A `DatasetInfo` for a split of a prepared TFDS dataset."""
    return _describe(tfds_builder(name, data_dir), name, split, num_images)


def load_tfds(
    name: str,
    *,
    split: str,
    data_dir: PathLike | None,
    shuffle_files: bool = False,
    seed: int = 0,
    num_images: int | None = None,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Reads a split of a prepared TFDS image dataset.

    A file that cannot be read to its end (a record that fails its checksum,
    a file cut short) does not stop the read: each record of the split lost
    in it has an element labelled `LOST_RECORD` in its place (see
    `read_record_files`; `make_dataset` names the file and fills those
    places).

    Args:
        name: str, TFDS name (`"cifar10_jpeg"`, `"imagenet2012"`).
        split: str, TFDS split with optional slicing
            (`"train[45000:45100]"`, `"validation"`, `"train[:90%]"`).
        data_dir: str, folder that holds the prepared dataset.
        shuffle_files: bool, whether to read the files in a seeded random
            order (for training).
        seed: int, the file shuffling seed.
        num_images: optional int, keep at most this many examples.

    Returns:
        `(dataset, info)`: a `tf.data.Dataset` of dicts `{"image": tf.string
        (encoded image), "label": int32 scalar (-1 when the dataset has no
        class label)}` and its `DatasetInfo`.
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder(name, data_dir)
    info = _describe(builder, name, split, num_images)
    image_key, label_key = _feature_keys(builder)

    def to_example(example):
        if label_key is None:
            label = tf.constant(-1, tf.int32)
        else:
            label = tf.cast(example[label_key], tf.int32)
        return {"image": example[image_key], "label": label}

    dataset = read_record_files(
        builder, split, to_example, decoders={image_key: tfds.decode.SkipDecoding()},
        shuffle_files=shuffle_files, seed=seed,
    )
    if num_images is not None:
        dataset = dataset.take(num_images)
    return dataset, info
