"""Helpers of the TFDS tests: a small TFDS dataset written in the test, and
the records of its files, to damage them."""

import os
import struct

import numpy as np

SPLIT = "images"  # the one split of the datasets written here


def jpeg_records(num_records, broken):
    """Random 8x8 images, as arrays, except at the indices in `broken`: a
    truncated JPEG (bytes that fail to decode)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    records = []
    for index in range(num_records):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        if index in broken:
            encoded = tf.io.encode_jpeg(image).numpy()
            records.append(encoded[: len(encoded) // 2])
        else:
            records.append(image)
    return records


def write_tfds(data_dir, name, records, num_shards=None, disable_shuffling=True):
    """Prepares `records` (arrays, or encoded bytes written as they are) as
    split `SPLIT` of TFDS dataset `name` under `data_dir`, each labelled
    with its index, in this order unless `disable_shuffling` is False (in
    `num_shards` files, if given)."""
    import tensorflow_datasets as tfds

    class WrittenHere(tfds.dataset_builders.AdhocBuilder, skip_registration=True):
        code_path = None  # no source folder to look for download checksums in

    WrittenHere(
        name=name,
        version="1.0.0",
        data_dir=data_dir,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3), encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(num_classes=len(records)),
        }),
        split_datasets={
            SPLIT: [(i, {"image": image, "label": i}) for i, image in enumerate(records)]
        },
        disable_shuffling=disable_shuffling,
    ).download_and_prepare(
        download_config=tfds.download.DownloadConfig(num_shards=num_shards)
    )
    return name


def record_files(data_dir, name):
    """The record files of split `SPLIT` of dataset `name`, in order."""
    folder = os.path.join(data_dir, name, "1.0.0")
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f"-{SPLIT}.tfrecord" in f
    )


def record_offsets(path):
    """`[(start, data length)]` of each record of a TFRecord file: a record is
    its length (8 bytes), the length's checksum (4), the data and the data's
    checksum (4)."""
    with open(path, "rb") as f:
        data = f.read()
    offsets, position = [], 0
    while position < len(data):
        (length,) = struct.unpack_from("<Q", data, position)
        offsets.append((position, length))
        position += 12 + length + 4
    return offsets


def flip_bytes(path, start, count):
    """Inverts `count` bytes of a file from `start` on."""
    with open(path, "r+b") as f:
        f.seek(start)
        chunk = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in chunk))
