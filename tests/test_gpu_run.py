"""The GPU run (benchmarks/gpu_run.py) fails fast and clearly without a GPU;
its dry run builds every part on the CPU at a tiny size, and its JAX and
torch parts run with TensorFlow and TFDS made unimportable, as on the GPU
machine. The CIFAR-10 subset file and the carry kit that take the data there
hold what TFDS holds."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

from benchmarks.cifar10_subset import jpeg_bytes, read_subset, write_subset
from tests.testing_utils import only_on_plumbing_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TFDS_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "tfds")


def _run(script, args, timeout=900, pythonpath=()):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # This checkout's benchmarks/ first, wherever the editable install points.
    env["PYTHONPATH"] = os.pathsep.join(
        [*pythonpath, REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _unimportable(folder):
    """A folder that, first on PYTHONPATH, makes `tensorflow` and
    `tensorflow_datasets` raise ImportError, as on a machine without them."""
    for name in ("tensorflow", "tensorflow_datasets"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on this machine (test stub)')\n")
    return folder


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_without_a_gpu_it_stops_at_once(tmp_path):
    proc = _run("gpu_run.py", [f"--output_dir={tmp_path / 'out'}"], timeout=120)
    assert proc.returncode == 2
    assert "no GPU visible" in proc.stderr and "--dry_run" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.slow
@only_on_plumbing_backend  # it starts its own backend processes: once is enough
def test_dry_run_of_jax_and_torch_needs_no_tensorflow(tmp_path):
    out = tmp_path / "gpu"
    stubs = _unimportable(tmp_path / "stubs")
    proc = _run("gpu_run.py", ["--dry_run", f"--output_dir={out}", "--peak_tflops=0.001",
                               "--backends=jax,torch,tensorflow", "--science_backend=jax"],
                pythonpath=[str(stubs)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["machine"]["cpu_model"]
    # (a), (b): the step table of both backends, MFU against --peak_tflops.
    for backend in ("jax", "torch"):
        row = summary["steps"][backend]
        for variant in ("mae", "ccmim"):
            assert row[variant]["images_per_second"] > 0
            assert row[variant]["mfu"] == pytest.approx(row[variant]["model_tflops_per_second"]
                                                        / 0.001)
            assert row[variant]["peak_memory_mb"] > 0
        assert row["ccmim_to_mae_time"] > 0 and row["flop_floor"] > 1
        assert row["attention_kernels"]
    # The TensorFlow rows are skipped with the reason.
    parts = {p["part"]: p for p in summary["parts"]}
    for name in ("step table, tensorflow", "input pipeline"):
        assert parts[name]["skipped"].startswith("TensorFlow cannot be imported: ImportError")
    assert not [p for p in parts.values() if "error" in p]
    # (c): both settings, the selectivities logged at every point.
    selectivity = summary["selectivity"]
    assert selectivity["done"] and list(selectivity["runs"]) == ["T_s=1", "T_s=1->0.1"]
    for run in selectivity["runs"].values():
        for key in ("mask_selectivity", "score_selectivity", "reconstruction_loss"):
            assert len(run["history"][key]) == 2, key
    # (d): both encoders and a random one scored on the held-out images.
    cifar = summary["cifar10"]
    assert cifar["done"] and cifar["variants"]["mae"]["history"]["loss"]
    assert set(cifar["scores"]) == {"mae", "ccmim", "random_init"}
    for row in cifar["scores"].values():
        assert 0 <= row["knn_top1"] <= 100 and row["num_heldout"] == 16
        p = row["probe_top1"] / 100
        assert row["probe_top1_standard_error"] == pytest.approx(100 * np.sqrt(p * (1 - p) / 16))
    # (e): the encoders as float16 presets, one zip each; at most 8 files come back.
    files = sorted(os.listdir(out))
    assert files == ["encoder_ccmim.zip", "encoder_mae.zip", "step_jax.json", "step_torch.json",
                     "summary.json"]
    with zipfile.ZipFile(out / "encoder_mae.zip") as archive:
        archive.extractall(tmp_path / "presets")
    from keras_ccmim.models.vit_encoder import load_encoder

    config = json.loads((tmp_path / "presets" / "encoder_mae" / "config.json").read_text())
    assert config["config"]["dtype"]["config"]["name"] == "float16"
    encoder = load_encoder(tmp_path / "presets" / "encoder_mae", dtype="float32")
    assert encoder.num_layers == 1 and all(
        keras.backend.standardize_dtype(w.dtype) == "float32" for w in encoder.weights)


@pytest.mark.slow
@only_on_plumbing_backend
def test_dry_run_runs_the_tensorflow_rows_where_tensorflow_is(tmp_path):
    out = tmp_path / "gpu"
    proc = _run("gpu_run.py", ["--dry_run", f"--output_dir={out}", "--backends=tensorflow",
                               "--parts=steps,pipeline", f"--data_dir={tmp_path / 'no_tfds'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"]["tensorflow"]["mae"]["images_per_second"] > 0
    assert summary["pipeline"][0]["dataset"].startswith("synthetic_objects")
    assert summary["pipeline"][0]["headroom"] > 0
    assert summary["selectivity"] is None and summary["cifar10"] is None


@only_on_plumbing_backend
def test_cifar10_subset_file_round_trip(tmp_path):
    rng = np.random.RandomState(0)
    # Smooth images, which JPEG keeps within a few levels.
    base = rng.randint(40, 215, (6, 1, 1, 3))
    images = np.clip(base + rng.randint(-3, 4, (6, 32, 32, 3)), 0, 255).astype("uint8")
    labels = np.array([3, 1, 4, 1, 5, 9])
    path = write_subset(tmp_path / "subset.npz", {
        "train": (jpeg_bytes(images[:4]), labels[:4], "train[:4]"),
        "heldout": (jpeg_bytes(images[4:]), labels[4:], "train[4:]")})
    data, splits = read_subset(path)
    assert splits == {"train": "train[:4]", "heldout": "train[4:]"}
    np.testing.assert_array_equal(data["train"][1], labels[:4])
    np.testing.assert_array_equal(data["heldout"][1], labels[4:])
    assert data["train"][0].shape == (4, 32, 32, 3) and data["train"][0].dtype == np.uint8
    assert np.abs(data["heldout"][0].astype(int) - images[4:]).max() <= 6
    (tmp_path / "bad.npz").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="gpu_carry_kit.py"):
        read_subset(tmp_path / "bad.npz")


@pytest.mark.slow
@only_on_plumbing_backend
def test_carry_kit_writes_the_tfds_images_and_sizes_the_kit(tmp_path):
    if not os.path.isdir(os.path.join(SHARED_TFDS_DIR, "cifar10_jpeg")):
        pytest.skip("the shared cifar10_jpeg is not beside the repository")
    kit = tmp_path / "kit"
    proc = _run("gpu_carry_kit.py", [f"--kit_dir={kit}", f"--data_dir={SHARED_TFDS_DIR}",
                                     "--wheels=", "--train_images=40",
                                     "--heldout_split=train[45000:45016]"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "of 64 MiB" in proc.stdout and "working tree:" in proc.stdout
    data, splits = read_subset(kit / "cifar10_subset.npz")
    assert splits == {"train": "train[:40]", "heldout": "train[45000:45016]"}
    import tensorflow_datasets as tfds

    reference = tfds.load("cifar10_jpeg", split="train[45000:45016]", data_dir=SHARED_TFDS_DIR)
    examples = list(reference.as_numpy_iterator())
    np.testing.assert_array_equal(data["heldout"][1], [e["label"] for e in examples])
    # pillow and TensorFlow decode the same JPEG within a few levels.
    decoded = np.stack([e["image"] for e in examples]).astype(int)
    assert np.abs(data["heldout"][0].astype(int) - decoded).max() <= 8
    # Its own kit it rebuilds; a folder it did not write it never replaces.
    (kit / "wheels" / "an-old-0.1-py3-none-any.whl").write_text("old")
    proc = _run("gpu_carry_kit.py", [f"--kit_dir={kit}", f"--data_dir={SHARED_TFDS_DIR}",
                                     "--wheels=", "--train_images=8",
                                     "--heldout_split=train[45000:45008]"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.listdir(kit / "wheels") == [] and len(read_subset(kit / "cifar10_subset.npz")[0][
        "train"][1]) == 8
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    proc = _run("gpu_carry_kit.py", [f"--kit_dir={tmp_path / 'mine'}", "--wheels=",
                                     f"--data_dir={SHARED_TFDS_DIR}"])
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
