"""Any prepared TFDS image dataset, read from a `data_dir` without download.

Works with datasets known to the TFDS catalogue (`imagenet2012`, once
prepared in `data_dir`) and with datasets that exist only as prepared files
(`cifar10_jpeg` in `../shared/data/tfds`). Images are kept encoded and
decoded in the pipeline's parallel map, so shuffle buffers stay small.

A record whose image fails to decode does not stop the pipeline:
`decode_records` skips it, fills its place in the stream with a readable
neighbour and counts it; `report_skipped_records` (which the
`SkippedRecordsReport` callback calls at the end of each `fit`) gives the
count in one warning.
"""

import difflib
import logging
import os
import threading

import keras
import tensorflow as tf

from keras_ccmim.data.dataset_info import DatasetInfo
from keras_ccmim.data.splits import parse_split

# Names `make_dataset` resolves without TFDS, listed in error messages.
BUILTIN_SOURCES = ("synthetic_objects", "folder:<path>")

logger = logging.getLogger(__name__)

# Undecodable records the pipelines of this process have met, and how many
# of them a warning has given, by source (see `decode_records`).
_SKIPPED = {}
_REPORTED = {}
_SKIPPED_LOCK = threading.Lock()


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
            f"Dataset {name!r} is read with TFDS and needs data_dir: the "
            "folder that holds prepared TFDS datasets (for CIFAR-10, "
            "'<repo>/../shared/data/tfds'). Nothing is downloaded. Pass "
            "data_dir=..., or use 'synthetic_objects' or 'folder:<path>'."
        )
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise ValueError(
            f"data_dir {data_dir!r} for dataset {name!r} does not exist. "
            "Pass the folder that holds prepared TFDS datasets (for CIFAR-10, "
            "'<repo>/../shared/data/tfds')."
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


def describe_tfds(name, *, split, data_dir, num_images=None):
    """A `DatasetInfo` for a split of a prepared TFDS dataset."""
    return _describe(tfds_builder(name, data_dir), name, split, num_images)


def load_tfds(name, *, split, data_dir, shuffle_files=False, seed=0, num_images=None):
    """Reads a split of a prepared TFDS image dataset.

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
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders={image_key: tfds.decode.SkipDecoding()},
        # No auto-cache: it warns whenever an iterator stops early (`take`,
        # `steps_per_epoch`), and reading small datasets again is cheap.
        read_config=tfds.ReadConfig(shuffle_seed=seed, try_autocache=False),
    )

    def to_example(example):
        if label_key is None:
            label = tf.constant(-1, tf.int32)
        else:
            label = tf.cast(example[label_key], tf.int32)
        return {"image": example[image_key], "label": label}

    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    if num_images is not None:
        dataset = dataset.take(num_images)
    return dataset, info


def skipped_records():
    """The undecodable TFDS records this process's input pipelines have met.

    Returns:
        dict `{source: count}`, where `source` names the dataset, the split
        and the use, e.g. `"TFDS dataset 'cifar10_jpeg' split 'train'
        (training)"`. Records are counted each time a pipeline reads them
        (each pass over the data), including those read ahead by prefetching.
    """
    with _SKIPPED_LOCK:
        return dict(_SKIPPED)


def report_skipped_records():
    """Logs one warning with the undecodable TFDS records skipped since the
    last report (of any source), if there were any.

    Returns:
        dict `{source: count}` of the records skipped since the last report
        (empty when none were, and nothing is logged).
    """
    with _SKIPPED_LOCK:
        new = {
            source: count - _REPORTED.get(source, 0)
            for source, count in _SKIPPED.items()
            if count > _REPORTED.get(source, 0)
        }
        for source in new:
            _REPORTED[source] = _SKIPPED[source]
    if new:
        logger.warning(
            "Skipped %d record(s) whose image failed to decode: %s. Each one's place in "
            "the stream was filled by a readable image next to it in the same pass, so "
            "batches stay full and positioned and the run goes on. The dataset's files "
            "hold damaged images: to read every image, prepare the dataset again from "
            "intact sources (`tfds build ...`).",
            sum(new.values()),
            "; ".join(f"{count} in {source}" for source, count in sorted(new.items())),
        )
    return new


class SkippedRecordsReport(keras.callbacks.Callback):
    """At the end of each `fit`, calls `report_skipped_records`: one warning
    with the undecodable TFDS records skipped since the last report, nothing
    when there were none."""

    def on_train_end(self, logs=None):
        report_skipped_records()


# The position of the element that closes a pass (see `end_of_pass`).
_END_OF_PASS = -1


def end_of_pass(key):
    """The element that closes a pass in the input of `decode_records`: an
    empty record at position -1, with the pass's key `key`."""
    return tf.data.Dataset.from_tensors((
        {"image": tf.constant(b""), "label": tf.constant(-1, tf.int32)},
        tf.cast(key, tf.int64),
        tf.constant(_END_OF_PASS, tf.int64),
    ))


def _decode_image(image):
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


# Records `decode_records` checks together: its scan runs once per chunk.
_CHUNK = 32
# `decode_records`' gate while places wait for the next readable record;
# it matches no position.
_WAITING = -2


class _Places:
    """The rare steps of `decode_records`, in Python: a chunk of records in
    which some were skipped or a pass ends. Kept out of the graph, where an
    untaken branch still costs every chunk some time."""

    def __init__(self, transform, *, count, source, report_each_pass):
        self.transform = transform
        self.count = count
        self.source = source
        self.report_each_pass = report_each_pass

    def _filled(self, records, places):
        """`transform`'s outputs (flattened, each a batch of one) for each
        `(key, position)` in `places`, of the `(encoded, label)` records in
        turn."""
        pieces = []
        for index, (key, position) in enumerate(places):
            encoded, label = records[index % len(records)]
            example = {"image": _decode_image(encoded), "label": tf.constant(label)}
            output = self.transform(
                example, tf.constant(key, tf.int64), tf.constant(position, tf.int64)
            )
            pieces.append([tensor[None] for tensor in tf.nest.flatten(output)])
        return pieces

    def fill(self, gate, recent_encoded, recent_labels, pending_key, pending_first, keys,
             positions, encoded, labels, *outputs):
        """py_function body: the scan state (see `decode_records`), then the
        chunk (keys, positions, encoded images, labels, then `transform`'s
        outputs, flattened); returns the next state, then the outputs for
        the places the chunk fills, flattened."""
        expected = int(gate)
        recent = list(zip(recent_encoded.numpy().tolist(), recent_labels.numpy().tolist()))
        pending = (int(pending_key), int(pending_first))
        positions = positions.numpy()
        records = list(zip(encoded.numpy().tolist(), labels.numpy().tolist()))
        pieces = []
        skipped = 0
        for i, (key, position) in enumerate(zip(keys.numpy().tolist(), positions.tolist())):
            if position == _END_OF_PASS:
                if expected in (0, _WAITING):
                    raise ValueError(
                        f"No record of {self.source} could be decoded: every image of a "
                        f"pass over its {self.count} record(s) failed tf.io.decode_image. "
                        "Prepare the dataset again from intact images (`tfds build "
                        "...`), or use another dataset."
                    )
                skipped += self.count - expected
                places = [(key, p) for p in range(expected, self.count)]
                if places and not recent:
                    # Nothing readable read yet (a first pass that starts among
                    # skipped records at its end): the next readable record
                    # fills those places.
                    expected, pending = _WAITING, (key, expected)
                    continue
                # The last readable records, the latest first.
                pieces += self._filled(recent[::-1], places)
                expected = 0
                continue
            places = []
            if expected == _WAITING:
                places = [(pending[0], p) for p in range(pending[1], self.count)]
                expected = 0
            skipped += position - expected
            places += [(key, p) for p in range(expected, position)]
            pieces += self._filled([records[i]], places)
            pieces.append([tensor[i : i + 1] for tensor in outputs])
            expected = position + 1
            recent = (recent + [records[i]])[-_CHUNK:]
        if skipped:
            with _SKIPPED_LOCK:
                _SKIPPED[self.source] = _SKIPPED.get(self.source, 0) + skipped
        if self.report_each_pass and (positions < 0).any():
            report_skipped_records()
        if pieces:
            filled = [tf.concat(parts, 0) for parts in zip(*pieces)]
        else:
            filled = [tensor[:0] for tensor in outputs]
        recent_encoded = tf.constant([e for e, _ in recent], tf.string, shape=[len(recent)])
        recent_labels = tf.constant([l for _, l in recent], tf.int32, shape=[len(recent)])
        return [expected, recent_encoded, recent_labels, *pending] + filled


def decode_records(stream, transform, *, count, begin, source, report_each_pass=False):
    """Decodes and transforms a stream of TFDS records, skipping those that
    fail to decode without moving any other record from its place.

    The input holds `(example, key, position)` per record (`example` as
    `load_tfds` gives it, with the encoded `"image"`; `key` the pass, int64;
    `position` its place in the pass, int64, from `begin` in the first pass
    and from 0 in each later one), and each pass ends with
    `end_of_pass(key)`. Each record's image is decoded (uint8 `[H, W, 3]`)
    and `transform(example, key, position)` gives the output element, in
    one parallel map. The output has one element for each place of each
    pass. The place of a record whose image fails to decode (or that the
    reader could not read) is filled by the next readable record of its
    pass; at the end of a pass, by the last readable records read, the
    latest first (the last `_CHUNK` of them in turn, for more places); each
    is transformed for the place it fills (its key and position). A stream
    without such records comes out as `stream.map(decode and transform)`
    would. As every record keeps its place, a stream started later is still
    the tail of one started earlier, except one that starts among skipped
    records at the end of a pass (the next pass's first readable record
    fills those).

    The records are checked in chunks: a chunk whose positions follow on
    from the last one passes as it is; one in which records were skipped or
    a pass ends goes through a Python call, which counts the skipped records
    under `source` (see `skipped_records`) and fills their places. With
    `report_each_pass`, `report_skipped_records` runs at the end of each
    pass (for evaluation reads, which no `fit` callback reports). A pass from
    position 0 without a readable record raises `InvalidArgumentError`.

    Args:
        stream: `tf.data.Dataset` of `(example, key, position)`, see above.
        transform: `transform(example, key, position)` -> a nest of tensors
            of static shapes (the images, augmented, and their extras).
        count: int, the records of a full pass.
        begin: int, the position of the stream's first record in its pass.
        source: str, what the records are, for the count and messages.
        report_each_pass: bool, report skipped records at pass ends.

    Returns:
        A `tf.data.Dataset` of `transform`'s outputs.
    """

    def prepare(example, key, position):
        # The end of a pass gets a 1x1 image for `transform` to work on.
        image = tf.cond(
            position >= 0,
            lambda: _decode_image(example["image"]),
            lambda: tf.zeros([1, 1, 3], tf.uint8),
        )
        output = transform(dict(example, image=image), key, position)
        return output, key, position, example["image"], example["label"]

    prepared = stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    prepared = prepared.ignore_errors(log_warning=False)
    output_structure = prepared.element_spec[0]
    output_specs = tf.nest.flatten(output_structure)
    places = _Places(
        transform, count=int(count), source=source, report_each_pass=report_each_pass
    )
    state_names = ("gate", "encoded", "labels", "pending_key", "pending_first")
    state_types = [tf.int64, tf.string, tf.int32, tf.int64, tf.int64]
    state_shapes = ([], [None], [None], [], [])

    def in_place(state, chunk):
        # Each record follows on from the one before: nothing to fill.
        output, _, positions, encoded, labels = chunk
        state = dict(state, gate=positions[-1] + 1, encoded=encoded, labels=labels)
        return state, output

    def around(state, chunk):
        output, keys, positions, encoded, labels = chunk
        values = tf.py_function(
            places.fill,
            [state[name] for name in state_names]
            + [keys, positions, encoded, labels] + tf.nest.flatten(output),
            state_types + [spec.dtype for spec in output_specs],
        )
        state = {
            name: tf.ensure_shape(value, shape)
            for name, value, shape in zip(state_names, values, state_shapes)
        }
        filled = [
            tf.ensure_shape(value, [None] + spec.shape)
            for value, spec in zip(values[len(state_names):], output_specs)
        ]
        return state, tf.nest.pack_sequence_as(output_structure, filled)

    def fill(state, chunk):
        positions = chunk[2]
        following = state["gate"] + tf.range(tf.size(positions, out_type=tf.int64))
        return tf.cond(
            tf.reduce_all(tf.equal(positions, following)),
            lambda: in_place(state, chunk),
            lambda: around(state, chunk),
        )

    zero = tf.constant(0, tf.int64)
    initial = {
        # The position the chunk's first record has when none was skipped
        # (_WAITING while places wait for the next readable record).
        "gate": tf.constant(int(begin), tf.int64),
        # The last readable records read, up to `_CHUNK`, the latest last.
        "encoded": tf.constant([], tf.string),
        "labels": tf.constant([], tf.int32),
        # The places that wait: from this position of the pass with this key
        # to its end.
        "pending_key": zero,
        "pending_first": zero,
    }
    chunks = prepared.batch(_CHUNK, num_parallel_calls=tf.data.AUTOTUNE)
    return chunks.scan(initial, fill).unbatch()
