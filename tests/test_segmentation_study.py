"""benchmarks/segmentation_study.py runs end to end at a tiny size and
writes the README table's JSON and markdown."""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.testing_utils import only_on_plumbing_backend

pytestmark = pytest.mark.slow  # pretrains in a subprocess: see pyproject.toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The study's plumbing is backend-independent; finetune_segmenter() itself is tested on
# every backend (tests/evaluation/test_segment.py).
@only_on_plumbing_backend
def test_tiny_study(tmp_path):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # This checkout's benchmarks/ first, wherever the editable install points.
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    process = subprocess.run(
        [sys.executable, "benchmarks/segmentation_study.py", f"--output_dir={tmp_path}",
         "--arms=random,mae", "--seeds=0,1", "--pretrain_steps=4", "--pretrain_images=128",
         "--segment_steps_per_epoch=1", "--segment_train_images=32",
         "--segment_eval_images=8", "--batch_size=8"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    summary = json.loads((tmp_path / "results.json").read_text())
    assert list(summary["arms"]) == ["random", "mae"] and summary["seeds"] == [0, 1]
    for arm in summary["arms"].values():
        assert list(arm["protocols"]) == ["finetune", "linear_probe"]
        for row in arm["protocols"].values():
            assert len(row["runs"]) == 2 and 0 <= row["mean"]["miou"] <= 100
    assert summary["arms"]["mae"]["pretrain_seconds"] > 0
    assert summary["protocols"]["linear_probe"]["freeze_encoder"] is True
    assert summary["protocols"]["finetune"]["batch_size"] == 8
    table = (tmp_path / "results.md").read_text()
    assert "| mae | 4 steps | linear_probe |" in table and summary["hardware"] in table
