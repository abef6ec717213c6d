"""The GPU run (benchmarks/gpu_run.py) fails fast and clearly without a GPU,
and its dry run builds every part on the CPU at a tiny size."""

import json
import os
import shutil
import subprocess
import sys

import keras
import pytest

from tests.testing_utils import PLUMBING_BACKEND, only_on_plumbing_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, timeout=900):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # This checkout's benchmarks/ first, wherever the editable install points.
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_run.py"), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_without_a_gpu_it_stops_at_once(tmp_path):
    proc = _run([f"--output_dir={tmp_path / 'out'}"], timeout=120)
    assert proc.returncode == 2
    assert "no GPU visible" in proc.stderr and "--dry_run" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.slow
@only_on_plumbing_backend  # it starts its own backend processes: once is enough
def test_dry_run_runs_every_part_and_writes_its_summary(tmp_path):
    out = tmp_path / "gpu"
    # Without CIFAR-10 under --data_dir the pretraining part is skipped (and
    # recorded so): benchmarks/cifar10_study.py is tested on its own in
    # test_benchmarks.py, with the flags this run's dry run passes it.
    proc = _run(["--dry_run", f"--output_dir={out}", f"--backends={PLUMBING_BACKEND}",
                 f"--data_dir={tmp_path / 'no_tfds'}"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] and summary["machine"]["cpu_model"]
    for backend in (PLUMBING_BACKEND,):
        row = summary["steps"][backend]
        for variant in ("mae", "ccmim"):
            assert row[variant]["images_per_second"] > 0
            assert row[variant]["mfu"] is None  # no GPU peak on a CPU
        assert row["ccmim_to_mae_time"] > 0
        assert row["attention_kernels"]
    assert summary["pipeline"] and summary["pipeline"][0]["headroom"] > 0
    parts = {p["part"]: p for p in summary["parts"]}
    assert not [p for p in parts.values() if "error" in p and "skipped" not in p["error"]]
    assert parts["cifar10 pretraining + k-NN"]["error"].startswith("skipped: no cifar10_jpeg")
    assert summary["cifar10"] is None
