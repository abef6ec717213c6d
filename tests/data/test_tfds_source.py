import numpy as np
import pytest

from keras_ccmim.data import describe_dataset, load_tfds, make_dataset

from tests.data.tfds_testing import SPLIT, jpeg_records, write_tfds


def test_cifar10_jpeg_slice(tfds_data_dir):
    ds = make_dataset(
        "cifar10_jpeg",
        split="train[45000:45100]",
        data_dir=tfds_data_dir,
        batch_size=25,
        image_size=32,
        training=False,
    )
    assert ds.cardinality().numpy() == 4
    batches = list(ds.as_numpy_iterator())
    images, extras = batches[0]
    assert images.shape == (25, 32, 32, 3) and images.dtype == np.float32
    assert set(extras) == {"label"} and extras["label"].dtype == np.int32
    labels = np.concatenate([extras["label"] for _, extras in batches])
    assert labels.shape == (100,) and 0 <= labels.min() and labels.max() <= 9
    assert -2.5 < images.min() < images.max() < 2.7


def test_cifar10_jpeg_training_batches(tfds_data_dir):
    ds = make_dataset(
        "cifar10_jpeg",
        split="train[:64]",
        data_dir=tfds_data_dir,
        batch_size=16,
        image_size=24,
        seed=5,
    )
    first = [x for x, _ in ds.take(2).as_numpy_iterator()]
    again = [x for x, _ in ds.take(2).as_numpy_iterator()]
    assert first[0].shape == (16, 24, 24, 3)
    assert not np.array_equal(first[0], again[0])  # a new epoch, new draws


def test_describe_and_load(tfds_data_dir):
    info = describe_dataset(
        "cifar10_jpeg", split="train[45000:]", data_dir=tfds_data_dir
    )
    assert (info.num_images, info.num_classes) == (5000, 10)
    assert info.class_names[0] == "airplane" and not info.has_foreground
    ds, info = load_tfds(
        "cifar10_jpeg", split="train[:10]", data_dir=tfds_data_dir, num_images=3
    )
    assert info.num_images == 3 and len(list(ds)) == 3


def test_unknown_split_lists_the_real_ones(tfds_data_dir):
    with pytest.raises(ValueError, match=r"splits are \['train'\]"):
        make_dataset(
            "cifar10_jpeg",
            split="test",
            data_dir=tfds_data_dir,
            batch_size=1,
            image_size=8,
        )


def test_unknown_dataset(tfds_data_dir):
    message = "Unknown dataset 'cifar10_jpg'.*Did you mean.*cifar10_jpeg"
    with pytest.raises(ValueError, match=message):
        make_dataset("cifar10_jpg", data_dir=tfds_data_dir, batch_size=1, image_size=8)


def test_unknown_dataset_without_shared_data(tmp_path):
    message = "Unknown dataset 'no_such_dataset'. Valid names are 'synthetic_objects'"
    with pytest.raises(ValueError, match=message):
        make_dataset(
            "no_such_dataset", data_dir=str(tmp_path), batch_size=1, image_size=8
        )


def test_catalogue_dataset_not_prepared(tmp_path):
    with pytest.raises(ValueError, match="'imagenet2012' is not prepared"):
        make_dataset("imagenet2012", data_dir=str(tmp_path), batch_size=1, image_size=8)


def test_missing_data_dir(tmp_path):
    # The messages name what to pass (the argument, the binaries' flag), not
    # a path of this repository's checkout.
    fix = r"Pass data_dir= \(the binaries' --data_dir\) to the folder holding the prepared TFDS"
    with pytest.raises(ValueError, match="needs data_dir: " + fix.replace("Pass", "pass")):
        make_dataset("cifar10_jpeg", batch_size=1, image_size=8)
    with pytest.raises(ValueError, match="does not exist. " + fix) as error:
        make_dataset(
            "cifar10_jpeg",
            data_dir=str(tmp_path / "missing"),
            batch_size=1,
            image_size=8,
        )
    assert "shared" not in str(error.value) and "<repo>" not in str(error.value)


# A TFDS dataset written in the test: random 8x8 JPEGs, each labelled with
# its index, in file order (no shuffling on write); the records at
# BROKEN_INDICES hold a truncated JPEG instead.
NUM_RECORDS = 12
BROKEN_INDICES = (5, 10, 11)  # one in the middle, two at the end of a pass
# Which record fills each position of a pass: a skipped one's place is taken
# by the next readable record of the pass, at its end by the last ones read,
# the latest first.
FILLED_BY = [0, 1, 2, 3, 4, 6, 6, 7, 8, 9, 9, 8]


@pytest.fixture(scope="module")
def broken_jpeg_dir(tmp_path_factory):
    """`(data_dir, name)` of the dataset with broken JPEGs."""
    import tensorflow as tf

    records = jpeg_records(NUM_RECORDS, BROKEN_INDICES)
    for index in BROKEN_INDICES:  # the test's premise: these fail to decode
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.decode_image(records[index], channels=3)
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    return data_dir, write_tfds(data_dir, "broken_jpeg_images", records)


def _skipped_since(before, name, use):
    from keras_ccmim.data import skipped_records

    source = f"TFDS dataset {name!r} split {SPLIT!r} ({use})"
    return skipped_records().get(source, 0) - before.get(source, 0)


def _warnings_of(caplog):
    return [
        r.getMessage() for r in caplog.records
        if r.name == "keras_ccmim.data.decode_failures" and r.levelname == "WARNING"
    ]


def test_evaluation_skips_broken_jpegs_and_warns_once(broken_jpeg_dir, caplog):
    from keras_ccmim.data import report_skipped_records, skipped_records

    data_dir, name = broken_jpeg_dir
    # Earlier tests' skips are not this one's: report them now, and drop the
    # warning that gives them (caplog holds the records of the whole test).
    report_skipped_records()
    caplog.clear()
    before = skipped_records()
    ds = make_dataset(
        name, split=SPLIT, data_dir=data_dir, batch_size=4, image_size=8, training=False
    )
    assert ds.cardinality().numpy() == NUM_RECORDS // 4
    with caplog.at_level("WARNING"):
        batches = list(ds.as_numpy_iterator())
    assert [images.shape for images, _ in batches] == [(4, 8, 8, 3)] * 3
    labels = np.concatenate([extras["label"] for _, extras in batches])
    np.testing.assert_array_equal(labels, FILLED_BY)
    # A skipped record's place holds its neighbour's image itself.
    images = np.concatenate([images for images, _ in batches])
    np.testing.assert_array_equal(images[5], images[6])
    np.testing.assert_array_equal(images[10], images[9])
    np.testing.assert_array_equal(images[11], images[8])
    assert _skipped_since(before, name, "evaluation") == len(BROKEN_INDICES)
    messages = _warnings_of(caplog)
    assert len(messages) == 1
    assert f"Skipped {len(BROKEN_INDICES)} record(s)" in messages[0]
    assert f"TFDS dataset {name!r} split {SPLIT!r} (evaluation)" in messages[0]


def test_training_stream_keeps_positions_with_broken_jpegs(broken_jpeg_dir):
    from keras_ccmim.data import skipped_records

    data_dir, name = broken_jpeg_dir
    before = skipped_records()

    def stream(start_batch, batches):
        ds = make_dataset(
            name, split=SPLIT, data_dir=data_dir, batch_size=4, image_size=8, seed=1,
            shuffle_buffer=0, repeat=True, start_batch=start_batch,
        )
        return list(ds.take(batches).as_numpy_iterator())

    from_start = stream(0, 6)  # two passes
    labels = np.concatenate([extras["label"] for _, extras in from_start])
    np.testing.assert_array_equal(labels, FILLED_BY * 2)
    images = np.concatenate([images for images, _ in from_start])
    # The filled place gets its own augmentation, drawn for its position.
    assert not np.array_equal(images[5], images[6])
    assert _skipped_since(before, name, "training") >= 2 * len(BROKEN_INDICES)
    # A resumed stream is the tail of the uninterrupted one.
    for (images, extras), (expected, expected_extras) in zip(stream(1, 5), from_start[1:]):
        np.testing.assert_array_equal(images, expected)
        np.testing.assert_array_equal(extras["label"], expected_extras["label"])


def test_resume_among_skipped_records_at_the_end_of_a_pass(broken_jpeg_dir):
    data_dir, name = broken_jpeg_dir

    def stream(start_batch, batches):
        ds = make_dataset(
            name, split=SPLIT, data_dir=data_dir, batch_size=2, image_size=8, seed=1,
            shuffle_buffer=0, repeat=True, start_batch=start_batch,
        )
        return list(ds.take(batches).as_numpy_iterator())

    # Batch 5 holds positions 10 and 11, both skipped, and nothing readable
    # was read before them: the next pass's first record fills them.
    resumed = stream(5, 7)
    labels = np.concatenate([extras["label"] for _, extras in resumed])
    np.testing.assert_array_equal(labels, [0, 0] + FILLED_BY)
    assert not np.array_equal(resumed[0][0][0], resumed[0][0][1])
    # From the next pass on, it is the uninterrupted stream again.
    for (images, _), (expected, _) in zip(resumed[1:], stream(0, 12)[6:]):
        np.testing.assert_array_equal(images, expected)


def test_fit_over_broken_jpegs_reports_the_count(broken_jpeg_dir, caplog):
    import keras

    from keras_ccmim.data import SkippedRecordsReport, report_skipped_records, skipped_records

    data_dir, name = broken_jpeg_dir
    report_skipped_records()
    ds = make_dataset(
        name, split=SPLIT, data_dir=data_dir, batch_size=4, image_size=8, seed=3
    )
    assert ds.cardinality().numpy() == NUM_RECORDS // 4
    seen = []
    for _ in range(2):  # two epochs, two shuffled passes
        labels = np.concatenate([extras["label"] for _, extras in ds.as_numpy_iterator()])
        assert labels.shape == (NUM_RECORDS,)
        assert not set(labels.tolist()) & set(BROKEN_INDICES)
        seen.append(labels)
    assert not np.array_equal(seen[0], seen[1])
    assert report_skipped_records() == {
        f"TFDS dataset {name!r} split {SPLIT!r} (training)": 2 * len(BROKEN_INDICES)
    }

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(NUM_RECORDS),
    ])
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    labelled = ds.map(lambda images, extras: (images, extras["label"]))
    caplog.clear()
    before = skipped_records()
    with caplog.at_level("WARNING"):
        history = model.fit(
            labelled, epochs=2, verbose=0, shuffle=False, callbacks=[SkippedRecordsReport()]
        )
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    # Two passes at least (the JAX and torch trainers read ahead a third).
    skipped = _skipped_since(before, name, "training")
    assert skipped >= 2 * len(BROKEN_INDICES)
    messages = _warnings_of(caplog)
    assert len(messages) == 1
    assert f"Skipped {skipped} record(s)" in messages[0]
    assert report_skipped_records() == {}


def test_dataset_without_a_readable_record(tmp_path):
    import tensorflow as tf

    records = jpeg_records(3, broken=(0, 1, 2))
    name = write_tfds(str(tmp_path), "unreadable_images", records)
    ds = make_dataset(
        name, split=SPLIT, data_dir=str(tmp_path), batch_size=1, image_size=8,
        training=False,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="could be decoded"):
        list(ds.as_numpy_iterator())


def test_training_order_needs_no_global_seed_and_works_with_seed_zero(tfds_data_dir):
    """A run's TFDS training stream is stateless: the same batches whatever
    TF's global seed (seed 0 included, which crashed a seeded shuffle), and
    each pass is a permutation of the split."""
    import keras

    def first_pass(global_seed):
        keras.utils.set_random_seed(global_seed)
        # repeat=True, a run's stream (without repeat, each iteration draws
        # its pass key from tf.data's seeded random stream instead).
        ds = make_dataset("cifar10_jpeg", split="train[:64]", data_dir=tfds_data_dir,
                          batch_size=16, image_size=8, seed=0, shuffle_buffer=40, repeat=True)
        return [(x, e["label"]) for x, e in ds.take(4).as_numpy_iterator()]

    a, b = first_pass(0), first_pass(123)
    assert len(a) == 4
    for (xa, la), (xb, lb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(la, lb)
    in_order = make_dataset("cifar10_jpeg", split="train[:64]", data_dir=tfds_data_dir,
                            batch_size=64, image_size=8, seed=0, shuffle_buffer=0)
    labels = np.concatenate([la for _, la in a])
    (_, extras), = in_order.as_numpy_iterator()
    assert sorted(labels.tolist()) == sorted(extras["label"].tolist())
    assert labels.tolist() != extras["label"].tolist()  # shuffled
