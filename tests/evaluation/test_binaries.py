"""Every evaluation binary end to end on synthetic_objects (subprocesses)."""

import json

import pytest

from tests.evaluation.conftest import TINY_ENCODER, run_python

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_ENCODER.items()]
DATA_FLAGS = ["--train_num_images=64", "--eval_num_images=32", "--batch_size=16"]


def run_ok(args, timeout=240):
    process = run_python(args, timeout=timeout)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    return process


@pytest.mark.parametrize(
    "binary", ["knn", "linear_probe", "finetune", "export", "visualize"]
)
def test_stray_arguments_are_rejected(binary):
    process = run_python([f"evaluate/{binary}.py", "stray", "--output=/tmp/never"])
    assert process.returncode != 0
    assert "Unexpected arguments: stray" in process.stderr


def test_knn_from_workdir(pretrained_workdir, tmp_path):
    output = tmp_path / "knn.json"
    run_ok(["evaluate/knn.py", f"--workdir={pretrained_workdir}", *DATA_FLAGS,
            "--k=5", f"--output={output}"])
    results = json.loads(output.read_text())
    assert results["protocol"] == "knn" and results["k"] == 5
    assert results["num_train"] == 64 and results["num_eval"] == 32
    assert 0 <= results["top1"] <= results["top5"] <= 100
    assert results["workdir"] == pretrained_workdir and results["image_size"] == 32


def test_export_then_probe_the_saved_model(tmp_path):
    saved_model = tmp_path / "saved_model"
    # --overwrite replaces an older SavedModel (fake files here) in place.
    (saved_model / "variables").mkdir(parents=True)
    for name in ("saved_model.pb", "fingerprint.pb", "variables/variables.index"):
        (saved_model / name).write_bytes(b"old")
    run_ok(["evaluate/export.py", "--random_init", *TINY_FLAGS, f"--saved_model={saved_model}",
            "--overwrite", f"--output={tmp_path / 'export.json'}"])
    assert (saved_model / "saved_model.pb").read_bytes() != b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "saved_model"]
    output = tmp_path / "probe.json"
    run_ok(["evaluate/linear_probe.py", f"--saved_model={saved_model}", *DATA_FLAGS,
            "--epochs=2", "--feature=cls", f"--output={output}"])
    results = json.loads(output.read_text())
    assert results["protocol"] == "linear_probe" and results["feature"] == "cls"
    assert results["num_train"] == 64 and results["image_size"] == 16
    assert 0 <= results["top1"] <= results["top5"] <= 100


def test_finetune_random_init(tmp_path):
    output = tmp_path / "finetune.json"
    run_ok(["evaluate/finetune.py", "--random_init", *TINY_FLAGS, *DATA_FLAGS, "--epochs=2",
            "--steps_per_epoch=2", "--warmup_epochs=1", "--rand_augment=0",
            f"--output={output}"])
    results = json.loads(output.read_text())
    assert results["protocol"] == "finetune" and results["steps"] == 4
    assert results["random_init"] is True


def test_visualize_from_workdir(pretrained_workdir, tmp_path):
    from PIL import Image

    output = tmp_path / "recon.png"
    run_ok(["evaluate/visualize.py", f"--workdir={pretrained_workdir}", "--num_images=3",
            f"--output={output}"])
    width, height = Image.open(output).size
    assert (width, height) == (4 * 98 + 2, 14 + 3 * 98 + 2)  # 32 px images upscaled 3x


def test_clear_errors(tmp_path):
    from keras_ccmim.evaluation import load_encoder, load_pretrainer

    process = run_python(["evaluate/knn.py", "--random_init", f"--workdir={tmp_path}"])
    assert process.returncode == 2
    assert "Pass exactly one of --workdir, --random_init, --saved_model" in process.stderr
    with pytest.raises(ValueError, match="holds no encoder preset"):
        load_encoder(tmp_path)
    with pytest.raises(ValueError, match="has no pretrainer.keras"):
        load_pretrainer(tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        load_encoder(tmp_path / "missing")
