"""Decoding a stream of TFDS records without letting a damaged image or file
stop it: `decode_records` fills the place of a record whose image fails to
decode, or that a damaged file lost, with a readable neighbour and counts it
(see `keras_ccmim.data.decode_failures`); `end_of_pass` closes each pass of
its input."""

import tensorflow as tf

from keras_ccmim.data.decode_failures import (
    LOST_RECORD,
    NoReadableRecordError,
    count_lost,
    count_skipped,
    parse_lost_record_text,
    report_damaged_file,
    report_skipped_records,
)
from keras_ccmim.data.image_header import DEFAULT_MAX_PIXELS, check_decoded_pixels


# The position of the element that closes a pass (see `end_of_pass`).
_END_OF_PASS = -1
# The position `decode_records` gives an element that stands in for a record
# lost in a damaged file: its place is filled as a skipped record's.
_LOST = -3


def end_of_pass(key):
    """The element that closes a pass in the input of `decode_records`: an
    empty record at position -1, with the pass's key `key`."""
    return tf.data.Dataset.from_tensors((
        {"image": tf.constant(b""), "label": tf.constant(-1, tf.int32)},
        tf.cast(key, tf.int64),
        tf.constant(_END_OF_PASS, tf.int64),
    ))


def _decode_image(image, max_pixels):
    image = tf.io.decode_image(
        check_decoded_pixels(image, max_pixels), channels=3, expand_animations=False
    )
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

    def __init__(self, transform, *, count, source, report_each_pass, max_pixels):
        self.transform = transform
        self.max_pixels = max_pixels
        self.count = count
        self.source = source
        self.report_each_pass = report_each_pass
        # The damaged files of the pass being read: path -> (records of
        # the split it lost, records of the split it holds).
        self.damaged = {}

    def _lost(self, text):
        """Notes a stand-in for a lost record (its `lost_record_text`)."""
        path, records, index = parse_lost_record_text(text)
        lost = max(self.damaged.get(path, (0,))[0], index + 1)
        self.damaged[path] = (lost, records)

    def _end_of_pass(self):
        """Names the damaged files met in the pass (once a process)."""
        for path, (lost, records) in sorted(self.damaged.items()):
            report_damaged_file(path, lost, records, self.source)
        self.damaged = {}

    def _nothing_readable(self, lost):
        """The error of a pass without a readable record, `lost` of whose
        records were lost in damaged files."""
        files = f" ({', '.join(sorted(self.damaged))})" if self.damaged else ""
        self._end_of_pass()
        return NoReadableRecordError(
            f"No record of {self.source} could be decoded or read: of the {self.count} "
            f"record(s) of a pass, {lost} are lost in damaged files{files} and "
            f"{self.count - lost} failed tf.io.decode_image (or are over max_pixels). "
            "Restore the files from an intact copy or prepare the dataset again "
            "(`tfds build ...`), or use another dataset."
        )

    def _filled(self, records, places):
        """`transform`'s outputs (flattened, each a batch of one) for each
        `(key, position)` in `places`, of the `(encoded, label)` records in
        turn."""
        pieces = []
        for index, (key, position) in enumerate(places):
            encoded, label = records[index % len(records)]
            image = _decode_image(encoded, self.max_pixels)
            example = {"image": image, "label": tf.constant(label)}
            output = self.transform(
                example, tf.constant(key, tf.int64), tf.constant(position, tf.int64)
            )
            pieces.append([tensor[None] for tensor in tf.nest.flatten(output)])
        return pieces

    def fill(self, gate, recent_encoded, recent_labels, pending_key, pending_first,
             lost_places, keys, positions, encoded, labels, *outputs):
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
        skipped = lost = 0
        # Lost records met since the last readable one: their places are
        # among the next ones to fill, which they are counted in.
        lost_places = int(lost_places)

        def undecodable(places):
            nonlocal lost_places
            from_lost = min(places, lost_places)
            lost_places -= from_lost
            return places - from_lost

        for i, (key, position) in enumerate(zip(keys.numpy().tolist(), positions.tolist())):
            if position == _LOST:
                self._lost(records[i][0])
                lost += 1
                lost_places += 1
                continue
            if position == _END_OF_PASS:
                if expected in (0, _WAITING):
                    raise self._nothing_readable(lost_places)
                skipped += undecodable(self.count - expected)
                lost_places = 0
                self._end_of_pass()
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
            skipped += undecodable(position - expected)
            places += [(key, p) for p in range(expected, position)]
            pieces += self._filled([records[i]], places)
            pieces.append([tensor[i : i + 1] for tensor in outputs])
            expected = position + 1
            recent = (recent + [records[i]])[-_CHUNK:]
        if skipped:
            count_skipped(self.source, skipped)
        if lost:
            count_lost(self.source, lost)
        if self.report_each_pass and (positions == _END_OF_PASS).any():
            report_skipped_records()
        if pieces:
            filled = [tf.concat(parts, 0) for parts in zip(*pieces)]
        else:
            filled = [tensor[:0] for tensor in outputs]
        recent_encoded = tf.constant([e for e, _ in recent], tf.string, shape=[len(recent)])
        recent_labels = tf.constant([l for _, l in recent], tf.int32, shape=[len(recent)])
        return [expected, recent_encoded, recent_labels, *pending, lost_places] + filled


def decode_records(stream, transform, *, count, begin, source, report_each_pass=False,
                   max_pixels=DEFAULT_MAX_PIXELS):
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
    reader could not read, or that stands in for a record lost in a damaged
    file: labelled `LOST_RECORD`) is filled by the next readable record of
    its pass; at the end of a pass, by the last readable records read, the
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
    under `source` (see `skipped_records`; the lost ones apart, see
    `lost_records`, their files named at the end of the pass, see
    `report_damaged_file`)
    and fills their places. With `report_each_pass`, `report_skipped_records`
    runs at the end of each pass (for evaluation reads, which no `fit`
    callback reports). A pass from position 0 without a readable record
    raises `InvalidArgumentError` holding a `NoReadableRecordError`'s one
    line (see `describe_data_error`).

    Args:
        stream: `tf.data.Dataset` of `(example, key, position)`, see above.
        transform: `transform(example, key, position)` -> a nest of tensors
            of static shapes (the images, augmented, and their extras).
        count: int, the records of a full pass.
        begin: int, the position of the stream's first record in its pass.
        source: str, what the records are, for the count and messages.
        report_each_pass: bool, report skipped records at pass ends.
        max_pixels: int > 0, a record whose image header shows more pixels
            is skipped undecoded, as an undecodable one.

    Returns:
        A `tf.data.Dataset` of `transform`'s outputs.
    """

    def prepare(example, key, position):
        # The end of a pass and the stand-ins for lost records get a 1x1
        # image for `transform` to work on; a stand-in's place is filled.
        lost = tf.equal(example["label"], LOST_RECORD)
        image = tf.cond(
            (position >= 0) & ~lost,
            lambda: _decode_image(example["image"], max_pixels),
            lambda: tf.zeros([1, 1, 3], tf.uint8),
        )
        output = transform(dict(example, image=image), key, position)
        position = tf.where(lost, tf.constant(_LOST, tf.int64), position)
        return output, key, position, example["image"], example["label"]

    prepared = stream.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    prepared = prepared.ignore_errors(log_warning=False)
    output_structure = prepared.element_spec[0]
    output_specs = tf.nest.flatten(output_structure)
    places = _Places(
        transform, count=int(count), source=source, report_each_pass=report_each_pass,
        max_pixels=max_pixels,
    )
    state_names = ("gate", "encoded", "labels", "pending_key", "pending_first", "lost_places")
    state_types = [tf.int64, tf.string, tf.int32, tf.int64, tf.int64, tf.int64]
    state_shapes = ([], [None], [None], [], [], [])

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
        # Records lost in damaged files met since the last readable record:
        # their places are among the next ones filled.
        "lost_places": zero,
    }
    chunks = prepared.batch(_CHUNK, num_parallel_calls=tf.data.AUTOTUNE)
    return chunks.scan(initial, fill).unbatch()
