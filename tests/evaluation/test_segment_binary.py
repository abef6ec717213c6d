"""evaluate/segment.py end to end (subprocesses): from --random_init, the
linear probe of a pretraining workdir at another image size, and bad input."""

import json

import pytest

from tests.evaluation.conftest import TINY_ENCODER, run_python

pytestmark = pytest.mark.slow  # subprocesses: see the `slow` marker in pyproject.toml

TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_ENCODER.items()]
RUN_FLAGS = ["--train_num_images=32", "--eval_num_images=8", "--batch_size=8", "--epochs=2",
             "--steps_per_epoch=2", "--warmup_epochs=0.5", "--head_dim=8", "--blr=1e-3"]


def run_ok(args, timeout=300):
    process = run_python(args, timeout=timeout)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return process


def test_random_init_run_writes_metrics_and_pictures(tmp_path):
    output, output_dir = tmp_path / "segment.json", tmp_path / "run"
    args = ["evaluate/segment.py", "--random_init", *TINY_FLAGS, *RUN_FLAGS,
            f"--output_dir={output_dir}", f"--output={output}"]
    process = run_ok(args)
    assert "2/2" in process.stdout  # Keras' progress bar (--verbose=1)
    results = json.loads(output.read_text())
    assert results["protocol"] == "segment" and results["random_init"] is True
    assert results["global_step"] == 4 and results["num_classes"] == 11
    assert 0 <= results["miou"] <= 100 and 0 <= results["aacc"] <= 100
    for name in ("predictions.png", "segmenter.keras", "history.jsonl", "results.json",
                 "segment_config.json", "checkpoints"):
        assert (output_dir / name).exists(), name
    # Resuming and refusing a changed rerun: test_segment.py, in process.


def test_workdir_encoder_probed_at_another_image_size(pretrained_workdir, tmp_path):
    output = tmp_path / "segment.json"
    run_ok(["evaluate/segment.py", f"--workdir={pretrained_workdir}", *RUN_FLAGS,
            "--segment_image_size=48", "--head=linear", "--freeze_encoder",
            f"--output={output}", "--verbose=0"])
    results = json.loads(output.read_text())
    assert results["image_size"] == 48 and results["num_pixels"] == 8 * 48 * 48
    assert results["workdir"] == pretrained_workdir
    assert results["head"] == "linear" and results["freeze_encoder"] is True


def test_bad_input_is_named(tmp_path):
    process = run_python(["evaluate/segment.py", "--random_init", *TINY_FLAGS, *RUN_FLAGS,
                          f"--dataset=folder:{tmp_path}", "--num_classes=3"])
    assert process.returncode == 2 and "has no images/" in process.stderr
