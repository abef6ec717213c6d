"""The folder scan counts each real file once, walks each real folder once
(link loops included), labels by the class folder of the path as listed, and
skips, without decoding, images whose header shows more than `max_pixels`."""

import logging
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import (
    describe_dataset,
    make_dataset,
    read_image_folder_manifest,
    scan_image_folder,
    write_dataset_manifest,
)

from tests.data.image_folder_testing import count_decodes, jpeg, new_process

PER_CLASS = 30


def _scan_warnings(caplog):
    return [
        r.getMessage() for r in caplog.records
        if r.name == "keras_ccmim.data.image_folder_scan" and r.levelname == "WARNING"
    ]


def _two_classes(root, per_class=PER_CLASS):
    for label, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i:02d}.jpg").write_bytes(jpeg(100 * label + i, 8, 8))
    return root


def _pipeline_labels(name, **options):
    ds = make_dataset(name, batch_size=4, image_size=8, training=False, **options)
    return np.concatenate([extras["label"] for _, extras in ds.as_numpy_iterator()])


def test_a_link_back_to_the_root_adds_nothing(tmp_path, monkeypatch, caplog):
    # The reported case: about 60 images and one link back to the root
    # became 2,214 images, 2,184 of them labelled with the link's class.
    new_process(monkeypatch)
    root = _two_classes(tmp_path / "images")
    os.symlink(root, root / "cat" / "loop")
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(root)
    assert len(folder.files) == 2 * PER_CLASS
    np.testing.assert_array_equal(np.bincount(folder.labels), [PER_CLASS, PER_CLASS])
    assert folder.not_followed == (os.path.join("cat", "loop"),)
    assert all("loop" not in path for path in folder.files)
    (message,) = _scan_warnings(caplog)
    assert "not walking 1 folder(s)" in message and os.path.join("cat", "loop") in message

    name = f"folder:{root}"
    assert describe_dataset(name).num_images == 2 * PER_CLASS
    np.testing.assert_array_equal(np.bincount(_pipeline_labels(name)), [PER_CLASS] * 2)


def test_each_real_file_and_folder_once_labelled_as_listed(tmp_path, monkeypatch, caplog):
    new_process(monkeypatch)
    root = _two_classes(tmp_path / "images", per_class=3)
    outside = tmp_path / "more"
    outside.mkdir()
    for i in range(2):
        (outside / f"m{i}.jpg").write_bytes(jpeg(50 + i, 8, 8))
    os.symlink(outside, root / "cat" / "more")  # no loop: walked, labelled cat
    os.symlink(outside, root / "dog" / "more_again")  # the same real folder
    os.symlink(root / "cat", root / "dog" / "cats")  # another class's folder
    os.symlink(root / "cat" / "00.jpg", root / "dog" / "linked.jpg")
    os.link(root / "cat" / "01.jpg", root / "dog" / "hard.jpg")
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(root)
    relative = [os.path.relpath(path, root) for path in folder.files]
    assert relative == [
        "cat/00.jpg", "cat/01.jpg", "cat/02.jpg", "cat/more/m0.jpg", "cat/more/m1.jpg",
        "dog/00.jpg", "dog/01.jpg", "dog/02.jpg",
    ]
    np.testing.assert_array_equal(folder.labels, [0] * 5 + [1] * 3)
    assert folder.not_followed == ("dog/cats", "dog/more_again")
    assert folder.duplicates == ("dog/hard.jpg", "dog/linked.jpg")
    assert len(_scan_warnings(caplog)) == 2

    # A flat folder counts a file and its link once too.
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(jpeg(1))
    os.symlink(flat / "a.jpg", flat / "b.jpg")
    assert scan_image_folder(flat).files == (str(flat / "a.jpg"),)


def _png_of_zeros(width, height):
    """A valid 1-bit grayscale PNG of `width` x `height` black pixels: a few
    kB that decode to `width * height * 3` bytes as RGB."""
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind, body):
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_skipped_and_named(tmp_path, monkeypatch, caplog):
    decodes = count_decodes(monkeypatch)
    root = _two_classes(tmp_path / "images", per_class=3)
    bomb = _png_of_zeros(16000, 16000)  # 768 MB as RGB, 256 million pixels
    assert len(bomb) < 100_000
    (root / "dog" / "big.png").write_bytes(bomb)
    with caplog.at_level(logging.WARNING):
        folder = scan_image_folder(root)
    assert folder.too_large == ("dog/big.png",) and folder.num_skipped == 0
    assert len(folder.files) == 6 and len(decodes) == 1
    (message,) = _scan_warnings(caplog)
    assert "Skipped 1 image file(s) out of 7" in message
    assert "max_pixels=89478485" in message and "dog/big.png" in message
    assert describe_dataset(f"folder:{root}").num_images == 6


def test_max_pixels_is_passed_through_and_holds_when_reading(tmp_path, monkeypatch, caplog):
    decodes = count_decodes(monkeypatch)
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):  # 64 pixels each, and 120 pixels each
        (root / f"small{i}.jpg").write_bytes(jpeg(i, 8, 8))
        (root / f"large{i}.jpg").write_bytes(jpeg(10 + i, 12, 10))
    name = f"folder:{root}"
    with caplog.at_level(logging.WARNING):
        assert describe_dataset(name, max_pixels=100).num_images == 4
        assert len(_pipeline_labels(name, max_pixels=100)) == 4
        assert describe_dataset(name).num_images == 8
    assert len(decodes) == 2  # one scan per cap
    (message,) = _scan_warnings(caplog)
    assert "Skipped 4 image file(s) out of 8" in message and "max_pixels=100" in message
    for large in ("large0.jpg", "large3.jpg"):
        assert large in message

    # The manifest records its cap, and is reused only for that cap.
    path = tmp_path / "manifest.json"
    assert write_dataset_manifest(name, path, max_pixels=100) == str(path)
    new_process(monkeypatch)
    assert read_image_folder_manifest(path)
    assert len(scan_image_folder(root, max_pixels=100).files) == 4
    assert len(decodes) == 2
    scan_image_folder(root)
    assert len(decodes) == 3

    # A file grown past the cap after the scan is refused before decoding.
    ds = make_dataset(name, batch_size=4, image_size=8, training=False, max_pixels=100)
    (root / "small0.jpg").write_bytes(jpeg(0, 20, 20))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_pixels=100"):
        list(ds.as_numpy_iterator())

    for bad in (0, -5, 2.5, True, "many"):
        with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
            describe_dataset(name, max_pixels=bad)
        with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
            make_dataset(name, batch_size=1, image_size=8, max_pixels=bad)
