"""A pretraining run on an image folder decodes it once (config check,
training data and the fixed batch share the scan), writes the scan to the
workdir, and a later call on the workdir reuses it."""

import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from keras_ccmim import data
from keras_ccmim.pictures import LABEL_HEIGHT
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
    # The folder lists class a, then class b; masks.png pictures both: its
    # image column is the images spread over the split, 8 of the 12.
    spread, extras = data.evenly_spaced_batch(
        f"folder:{folder}", count=8, image_size=values["image_size"])
    assert sorted(set(extras["label"].numpy())) == [0, 1]
    picture = np.asarray(Image.open(os.path.join(workdir, "masks.png")))
    cells = [picture[LABEL_HEIGHT + 2 + b * 98 : LABEL_HEIGHT + 2 + b * 98 + 96, 2:98]
             for b in range(8)]
    expected = data.unnormalize(spread.numpy()).repeat(6, axis=1).repeat(6, axis=2)
    np.testing.assert_allclose(np.stack(cells) / 255, expected, atol=0.5 / 255 + 1e-6)

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
