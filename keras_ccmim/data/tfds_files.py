"""Reading a TFDS split's record files as `builder.as_dataset` does, with the
records a damaged file loses stood in for where they were lost.

TensorFlow's record reader stops reading a file at its first record that
fails its checksum (or is cut short), with a `DataLossError` that names
neither the file nor what was lost. `as_dataset` passes that error on and
has no way to tell the files' records apart short of `add_tfds_id`, which
costs about as much again as reading a record; so the files are read here
as TFDS reads them (the split's file instructions, interleaved
`cycle_length` files at a time in blocks of `block_length`, each record
parsed by the dataset's features), each to the number of records the split
holds in it: the records it cannot give are replaced, in their places, by
elements labelled `LOST_RECORD` whose image is `lost_record_text`'s. A
healthy split comes out as `as_dataset` gives it, and a damaged file moves
no other record from its place.

A dataset stored in another format than TFRecord is read by `as_dataset`
(a damaged file then stops the read).
"""

import os

import tensorflow as tf

from keras_ccmim.data.decode_failures import LOST_RECORD, lost_record_text


def _interleave_lengths(builder, read_config):
    """TFDS's `(cycle_length, block_length)`: files read together, and
    records taken from each in turn."""
    cycle_length = read_config.interleave_cycle_length
    if not isinstance(cycle_length, int):  # unset: TFDS reads ordered datasets one by one
        cycle_length = 1 if builder.info.disable_shuffling else 16
    return cycle_length, read_config.interleave_block_length


def read_record_files(builder, split, to_example, *, decoders, shuffle_files=False, seed=0):
    """The examples of a split of a prepared TFDS dataset, in the order of
    `builder.as_dataset(split, shuffle_files=shuffle_files,
    read_config=tfds.ReadConfig(shuffle_seed=seed))`.

    Args:
        builder: a `tfds.core.DatasetBuilder` whose data exist.
        split: str, a split with optional slicing.
        to_example: function of a parsed record (dict of features) to the
            example given, a dict with an int32 `"label"` and a tf.string
            `"image"`.
        decoders: the TFDS decoders of the features (`SkipDecoding()` keeps
            an image encoded).
        shuffle_files: bool, read the files in a random order drawn from
            `seed`, a new one each pass.
        seed: int, that order's seed.

    Returns:
        A `tf.data.Dataset` of `to_example`'s outputs, and of
        `{"image": lost_record_text(path, records, k), "label": LOST_RECORD}`
        in the place of the `k`-th record a damaged file lost.
    """
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.file_adapters import FileFormat

    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    if builder.info.file_format not in (None, FileFormat.TFRECORD):
        dataset = builder.as_dataset(
            split=split, shuffle_files=shuffle_files, decoders=decoders, read_config=read_config
        )
        return dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    instructions = builder.info.splits[split].file_instructions
    paths = [os.fspath(instruction.filename) for instruction in instructions]
    files = tf.data.Dataset.from_tensor_slices((
        paths,
        tf.constant([instruction.skip for instruction in instructions], tf.int64),
        tf.constant([instruction.take for instruction in instructions], tf.int64),
    ))
    if shuffle_files:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    features = builder.info.features

    def read(serialized):
        return to_example(features.deserialize_example(serialized, decoders=decoders))

    def one_file(path, skip, take):
        records = tf.data.TFRecordDataset(path).skip(skip).take(take)
        examples = records.map(read, num_parallel_calls=tf.data.AUTOTUNE)
        # A damaged record ends the file's read (DataLossError): its place
        # and the rest of the file's share go to stand-ins.
        lost = tf.data.Dataset.range(take).map(lambda index: {
            "image": lost_record_text(path, take, index),
            "label": tf.constant(LOST_RECORD, tf.int32),
        })
        return examples.ignore_errors(log_warning=False).concatenate(lost).take(take)

    cycle_length, block_length = _interleave_lengths(builder, read_config)
    return files.interleave(
        one_file,
        cycle_length=cycle_length,
        block_length=block_length,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
