"""The training stream: the order a run reads its examples in, a function
of `(seed, position)` alone, so a resumed run reads on where a killed one
stopped (see `training_stream`)."""

import dataclasses

import tensorflow as tf

from keras_ccmim.data.image_folder import image_folder_files
from keras_ccmim.data.sources import FOLDER_PREFIX, SYNTHETIC_OBJECTS, folder_path
from keras_ccmim.data.synthetic_objects import synthetic_objects_arrays
from keras_ccmim.data.tfds_records import end_of_pass
from keras_ccmim.data.tfds_source import load_tfds

# Salt that keeps the order drawn from one `seed` apart from its other streams.
ORDER_SALT = 0x0D5E


def indexed_examples(name, *, split, image_size, num_images, max_pixels):
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
            folder_path(name), split=split, num_images=num_images, name=name,
            max_pixels=max_pixels,
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


def training_stream(name, *, split, data_dir, image_size, num_images, seed,
                     shuffle_buffer, repeat, start, max_pixels):
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
    with `end_of_pass`, for `decode_records`. `max_pixels` is the cap of an
    image folder's scan (see `scan_image_folder`).
    """
    indexed = indexed_examples(
        name, split=split, image_size=image_size, num_images=num_images,
        max_pixels=max_pixels,
    )
    if indexed is not None:
        lookup, info = indexed
    else:
        raw, info = load_tfds(
            name, split=split, data_dir=data_dir, shuffle_files=False, num_images=num_images
        )
    count = info.num_images or 0
    first_pass, offset = divmod(start, count) if count else (0, 0)
    order_key = tf.constant(int(seed) * 65_536 + ORDER_SALT, tf.int64)
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
