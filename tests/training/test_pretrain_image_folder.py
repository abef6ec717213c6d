"""A pretraining run on an image folder decodes it once (config check,
training data and the fixed batch share the scan), writes the scan to the
workdir, and a later call on the workdir reuses it."""

import json
import logging
import os

import pytest

from keras_ccmim.training import pretrain

from tests.data.image_folder_testing import (
    count_decodes,
    new_process,
    skipped_warnings,
    write_class_folder,
)

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

MANIFEST = "image_folder_manifest.json"


@pytest.fixture
def folder(tmp_path):
    """13 JPEGs in two classes, one of them broken."""
    return write_class_folder(tmp_path / "images", classes=("a", "b"))


def test_pretraining_on_a_folder_scans_it_once(tiny_run, folder, monkeypatch, caplog):
    decodes = count_decodes(monkeypatch)
    values = tiny_run(
        dataset=f"folder:{folder}", num_images=None, batch_size=4, epochs=1,
        steps_per_epoch=2, warmup_epochs=0.5, lift_images=4,
    )
    workdir = values["workdir"]
    with caplog.at_level(logging.WARNING):
        pretrain(values)
    assert [len(files) for files in decodes] == [13]
    warnings = skipped_warnings(caplog)
    assert len(warnings) == 1 and "Skipped 1 unreadable" in warnings[0]
    with open(os.path.join(workdir, MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["num_files"] == 12 and manifest["num_skipped"] == 1
    assert manifest["skipped"] == [os.path.join("b", "broken.jpg")]
    assert manifest["class_names"] == ["a", "b"]
    assert sorted(os.listdir(folder)) == ["a", "b"]  # nothing written there

    # A later process (rerunning the finished run) takes the manifest.
    new_process(monkeypatch)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pretrain(values)
    assert len(decodes) == 1
    assert len(skipped_warnings(caplog)) == 1

    # Starting afresh moves the earlier manifest aside with the other outputs.
    pretrain(values, fresh=True)
    assert len(decodes) == 1
    assert os.path.exists(os.path.join(workdir, "previous-1", MANIFEST))
    assert os.path.exists(os.path.join(workdir, MANIFEST))
