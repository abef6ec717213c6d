"""An evaluation binary on an image folder decodes it once: the two splits'
descriptions and pipelines share one scan, and its warning comes once."""

import json

import pytest

from tests.data.image_folder_testing import write_class_folder
from tests.evaluation.conftest import TINY_ENCODER, run_python

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_ENCODER.items()]


def test_knn_on_a_folder_warns_once(tmp_path):
    folder = write_class_folder(tmp_path / "images")
    output = tmp_path / "knn.json"
    process = run_python([
        "evaluate/knn.py", "--random_init", *TINY_FLAGS, f"--dataset=folder:{folder}",
        "--train_split=train[:75%]", "--eval_split=train[75%:]", "--batch_size=3", "--k=3",
        f"--output={output}",
    ])
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    results = json.loads(output.read_text())
    assert results["num_train"] + results["num_eval"] == 12
    assert process.stderr.count("Skipped 1 unreadable or corrupt image file(s) out of 13") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["cat", "dog"]


def test_knn_on_a_folder_holds_out_a_slice_by_default(tmp_path):
    """A folder has no `test` split: without split flags the bank is
    `train[:80%]` and the queries `train[80%:]`, and one line says so."""
    folder = write_class_folder(tmp_path / "images")
    output = tmp_path / "knn.json"
    process = run_python([
        "evaluate/knn.py", "--random_init", *TINY_FLAGS, f"--dataset=folder:{folder}",
        "--batch_size=3", "--k=3", f"--output={output}",
    ])
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    results = json.loads(output.read_text())
    assert (results["train_split"], results["eval_split"]) == ("train[:80%]", "train[80%:]")
    assert (results["num_train"], results["num_eval"]) == (10, 2)  # of 12 readable images
    line = (f"folder:{folder} has no 'test' split: evaluating on the held-out 'train[80%:]', "
            "training on 'train[:80%]' (set the splits to choose others).")
    assert process.stdout.splitlines().count(line) == 1, process.stdout[-2000:]
