"""An image folder is scanned (every file decoded) once per process; its
manifest is reused, written only where asked, and redone when the folder
changes."""

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import (
    describe_dataset,
    make_dataset,
    read_dataset_manifest,
    read_image_folder_manifest,
    scan_image_folder,
    write_dataset_manifest,
    write_image_folder_manifest,
)
from keras_ccmim.data import image_folder_scan

from tests.data.image_folder_testing import (
    count_decodes,
    jpeg,
    new_process,
    skipped_warnings,
    write_class_folder,
)

SKIPPED_WARNING = "Skipped 1 unreadable or corrupt image file(s) out of 13"


@pytest.fixture
def folder(tmp_path):
    """Two classes of 6 JPEGs, plus one broken JPEG in the second."""
    return write_class_folder(tmp_path / "images")


@pytest.fixture
def decodes(monkeypatch):
    return count_decodes(monkeypatch)


def test_one_decode_and_one_warning_across_a_runs_uses(folder, decodes, caplog):
    name = f"folder:{folder}"
    with caplog.at_level(logging.WARNING):
        # What a pretraining run does (describe, train, the fixed batch) and
        # then an evaluation binary (describe and read two splits).
        info = describe_dataset(name, split="train")
        train = make_dataset(name, batch_size=4, image_size=8, seed=3)
        fixed = make_dataset(name, batch_size=4, image_size=8, training=False)
        for split in ("train[:75%]", "train[75%:]"):
            describe_dataset(name, split=split)
            make_dataset(name, split=split, batch_size=3, image_size=8, training=False)
        folder_scan = scan_image_folder(folder)
    assert len(decodes) == 1 and len(decodes[0]) == 13
    assert skipped_warnings(caplog) == [f"{SKIPPED_WARNING} in {folder}."]
    assert info.num_images == 12 and folder_scan.num_skipped == 1
    assert folder_scan.skipped == (os.path.join("dog", "broken.jpg"),)
    next(iter(train)), next(iter(fixed))

    # The same files, labels and order as a scan that decodes afresh.
    image_folder_scan._SCANS.clear()
    again = scan_image_folder(folder)
    assert len(decodes) == 2
    assert again.files == folder_scan.files
    np.testing.assert_array_equal(again.labels, folder_scan.labels)
    np.testing.assert_array_equal(folder_scan.labels, [0] * 6 + [1] * 6)


def test_cached_scan_keeps_the_data_and_its_seeding(folder, decodes):
    name = f"folder:{folder}"

    def first_batch():
        images, extras = next(iter(make_dataset(name, batch_size=4, image_size=8, seed=5)))
        return images.numpy(), extras["label"].numpy()

    tf.random.set_seed(1)
    cold = first_batch()
    tf.random.set_seed(1)
    warm = first_batch()
    assert len(decodes) == 1
    np.testing.assert_array_equal(cold[0], warm[0])
    np.testing.assert_array_equal(cold[1], warm[1])


def test_manifest_content(folder, decodes, tmp_path):
    path = tmp_path / "run" / "manifest.json"
    path.parent.mkdir()
    assert write_image_folder_manifest(folder, path) == str(path)
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "keras_ccmim.image_folder_manifest"
    assert manifest["version"] == 2
    assert manifest["directory"] == str(folder)
    assert manifest["class_names"] == ["cat", "dog"]
    assert manifest["num_files"] == 12
    assert manifest["files"] == (
        [[os.path.join("cat", f"{i}.jpg"), 0] for i in range(6)]
        + [[os.path.join("dog", f"{i}.jpg"), 1] for i in range(6)]
    )
    assert manifest["num_skipped"] == 1
    assert manifest["skipped"] == [os.path.join("dog", "broken.jpg")]
    assert manifest["max_pixels"] == 1024**3 // 4 // 3 and manifest["too_large"] == []
    assert len(manifest["fingerprint"]) == 64
    assert len(decodes) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["manifest.json"]


def test_a_changed_folder_is_scanned_again(folder, decodes, caplog):
    with caplog.at_level(logging.WARNING):
        first = scan_image_folder(folder)
        scan_image_folder(folder)
        assert len(decodes) == 1
        (folder / "cat" / "6.jpg").write_bytes(jpeg(7))  # a new file
        added = scan_image_folder(folder)
        assert len(decodes) == 2 and len(added.files) == 13
        (folder / "cat" / "6.jpg").write_bytes(jpeg(7)[:-40])  # a new size
        scan_image_folder(folder)
        assert len(decodes) == 3
        stat = os.stat(folder / "cat" / "0.jpg")
        os.utime(folder / "cat" / "0.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        scan_image_folder(folder)  # a new modification time
        assert len(decodes) == 4
        (folder / "cat" / "6.jpg").unlink()
        os.utime(folder / "cat" / "0.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns))
        restored = scan_image_folder(folder)  # as first scanned: cached
        assert len(decodes) == 4
    assert restored.files == first.files
    # One warning per state of the folder, not per use.
    assert len(skipped_warnings(caplog)) == 4


def test_a_later_process_reuses_the_manifest(folder, decodes, tmp_path, monkeypatch, caplog):
    name = f"folder:{folder}"
    path = str(tmp_path / "manifest.json")
    first = scan_image_folder(folder)
    assert write_dataset_manifest(name, path) == path
    assert len(decodes) == 1

    new_process(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert read_dataset_manifest(name, path)
        info = describe_dataset(name)
        reused = scan_image_folder(folder)
    assert len(decodes) == 1
    assert reused.files == first.files and reused.skipped == first.skipped
    np.testing.assert_array_equal(reused.labels, first.labels)
    assert info.num_images == 12
    assert skipped_warnings(caplog) == [f"{SKIPPED_WARNING} in {folder}."]

    # A folder changed since: the manifest is not taken, the folder rescanned.
    new_process(monkeypatch)
    (folder / "dog" / "broken.jpg").write_bytes(jpeg(3))
    assert not read_dataset_manifest(name, path)
    assert scan_image_folder(folder).num_skipped == 0
    assert len(decodes) == 2


def test_bad_manifests_are_ignored(folder, decodes, tmp_path):
    assert not read_image_folder_manifest(tmp_path / "missing.json")
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"format": "keras_ccmim.image_folder_manifest", "vers')
    assert not read_image_folder_manifest(damaged)
    good = tmp_path / "good.json"
    write_image_folder_manifest(folder, good)
    manifest = json.loads(good.read_text())
    for change in (
        {"skipped": [["not", "a", "name"]]},
        {"skipped": ["cat/never_there.jpg"]},
        {"fingerprint": "0" * 64},
        {"format": "something else"},
        {"directory": str(tmp_path / "elsewhere")},
        {"version": 1},  # made without a pixel cap
        {"max_pixels": "many"},
        {"too_large": ["cat/never_there.jpg"]},
    ):
        (tmp_path / "bad.json").write_text(json.dumps({**manifest, **change}))
        assert not read_image_folder_manifest(tmp_path / "bad.json"), change
    (tmp_path / "list.json").write_text("[1, 2]")
    assert not read_image_folder_manifest(tmp_path / "list.json")
    assert read_image_folder_manifest(good)


def test_the_manifest_is_never_written_in_the_image_folder(folder, decodes):
    before = sorted(str(p) for p in folder.rglob("*"))
    assert write_image_folder_manifest(folder, folder / "manifest.json") is None
    assert write_image_folder_manifest(folder, folder / "cat" / "m.json") is None
    assert sorted(str(p) for p in folder.rglob("*")) == before
    assert write_dataset_manifest("synthetic_objects", folder.parent / "m.json") is None
    assert not (folder.parent / "m.json").exists()
    assert not read_dataset_manifest("synthetic_objects", folder.parent / "m.json")
