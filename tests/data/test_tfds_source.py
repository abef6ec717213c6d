import numpy as np
import pytest

from keras_ccmim.data import describe_dataset, load_tfds, make_dataset


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
    with pytest.raises(ValueError, match="needs data_dir"):
        make_dataset("cifar10_jpeg", batch_size=1, image_size=8)
    with pytest.raises(ValueError, match="does not exist"):
        make_dataset(
            "cifar10_jpeg",
            data_dir=str(tmp_path / "missing"),
            batch_size=1,
            image_size=8,
        )
