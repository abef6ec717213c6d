import logging

import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import (
    describe_dataset,
    make_dataset,
    scan_image_folder,
    unnormalize,
)


def _write(path, image, fmt):
    path.parent.mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if fmt == "png" else tf.io.encode_jpeg
    path.write_bytes(encode(image).numpy())


def _image(height, width, channels=3, value=None):
    if value is not None:
        return np.full((height, width, channels), value, np.uint8)
    return np.random.randint(0, 256, size=(height, width, channels)).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "classes"
    _write(root / "cat" / "a.jpg", _image(37, 51), "jpeg")  # odd-size JPEG
    _write(root / "cat" / "b.png", _image(20, 20, channels=1), "png")  # grayscale
    _write(root / "cat" / "nested" / "c.png", _image(16, 24), "png")
    _write(root / "dog" / "d.JPEG", _image(64, 48), "jpeg")
    _write(root / "dog" / "e.png", _image(10, 12, channels=4), "png")  # RGBA
    (root / "dog" / "broken.jpg").write_bytes(b"not an image at all")
    jpeg = tf.io.encode_jpeg(_image(30, 30)).numpy()
    (root / "dog" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    (root / "empty_class").mkdir()
    return root


def test_class_subfolders_give_sorted_labels(class_folder, caplog):
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(class_folder)
    assert folder.class_names == ("cat", "dog", "empty_class")
    assert [p.rsplit("/", 1)[-1] for p in folder.files] == [
        "a.jpg", "b.png", "c.png", "d.JPEG", "e.png",
    ]
    np.testing.assert_array_equal(folder.labels, [0, 0, 0, 1, 1])
    assert folder.num_skipped == 2
    assert "Skipped 2 unreadable" in caplog.text


def test_class_folder_pipeline(class_folder):
    ds = make_dataset(
        f"folder:{class_folder}", batch_size=5, image_size=16, training=False
    )
    images, extras = next(iter(ds))
    assert images.shape == (5, 16, 16, 3) and images.dtype == tf.float32
    assert set(extras) == {"label"}
    assert sorted(extras["label"].numpy().tolist()) == [0, 0, 0, 1, 1]
    train = make_dataset(f"folder:{class_folder}", batch_size=2, image_size=8)
    assert train.cardinality().numpy() == 2
    for images, extras in train:
        assert images.shape == (2, 8, 8, 3)
    info = describe_dataset(f"folder:{class_folder}")
    assert (info.num_images, info.num_classes) == (5, 3)


def test_grayscale_becomes_rgb(tmp_path):
    _write(tmp_path / "g.png", _image(9, 9, channels=1, value=200), "png")
    ds = make_dataset(f"folder:{tmp_path}", batch_size=1, image_size=9, training=False)
    images, extras = next(iter(ds))
    np.testing.assert_allclose(unnormalize(images.numpy()) * 255.0, 200.0, atol=0.01)
    assert extras["label"].numpy().tolist() == [-1]


def test_flat_folder_is_unlabelled_and_sliceable(tmp_path):
    for i in range(10):
        _write(tmp_path / f"{i}.png", _image(12, 12, value=i * 20), "png")
    folder = scan_image_folder(tmp_path)
    assert folder.class_names is None and (folder.labels == -1).all()
    name = f"folder:{tmp_path}"
    options = dict(batch_size=1, image_size=4, training=False)
    head = make_dataset(name, split="train[:80%]", **options)
    tail = make_dataset(name, split="train[80%:]", **options)

    def means(ds):
        return {round(float(x.numpy().mean()), 4) for x, _ in ds}

    assert len(means(head)) == 8 and len(means(tail)) == 2
    assert not means(head) & means(tail)
    with pytest.raises(ValueError, match="one split, 'train'"):
        make_dataset(f"folder:{tmp_path}", split="test", batch_size=1, image_size=4)


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        make_dataset(f"folder:{tmp_path / 'nope'}", batch_size=1, image_size=8)
    with pytest.raises(ValueError, match="no readable image"):
        make_dataset(f"folder:{tmp_path}", batch_size=1, image_size=8)
    (tmp_path / "only_junk.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="no readable image"):
        scan_image_folder(tmp_path)
    with pytest.raises(ValueError, match="has no path"):
        make_dataset("folder:", batch_size=1, image_size=8)
