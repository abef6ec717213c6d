"""The benchmark scripts run end to end on a tiny model and report figures
that agree with the spec's FLOP formula and with each other.

They are run as a user runs them (a subprocess from the repository root);
the speed itself is never asserted (that is what the scripts are for).
"""

import json
import os
import subprocess
import sys

import keras
import pytest

from tests.testing_utils import only_on_plumbing_backend

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A one-block model at 16 px: 16 patches of 4x4, 4 of them visible.
TINY = dict(image_size=16, patch_size=4, hidden_dim=32, num_layers=1, num_heads=2,
            decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2)
BATCH = 4


def _run(script, args, timeout=600):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # This checkout's benchmarks/ first, wherever the editable install points.
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", script), *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _block_flops(tokens, width):
    # 24 n D^2 + 4 n^2 D (MLP ratio 4), the spec's per-block forward count.
    return 24 * tokens * width**2 + 4 * tokens**2 * width


@pytest.fixture(scope="module")
def step_report(tmp_path_factory):
    output = tmp_path_factory.mktemp("step") / "step.json"
    flags = [f"--{k}={v}" for k, v in TINY.items()]
    stdout = _run("step_throughput.py", [
        *flags, f"--batch_size={BATCH}", f"--backends={keras.backend.backend()}",
        "--warmup_steps=1", "--steps=2", "--repeats=2", "--matmul_size=128",
        "--matmul_repeats=2", "--compare_reference", f"--output={output}",
    ])
    with open(output) as f:
        return json.load(f), stdout


def test_step_throughput_reports_both_steps(step_report):
    report, stdout = step_report
    assert "| backend | MAE img/s | ccMIM img/s" in stdout
    assert f"machine: {report['machine']['label']}" in stdout
    assert report["machine"]["cpu_model"] and report["machine"]["cpu_cores"] >= 1
    (result,) = report["results"]
    assert "error" not in result, result.get("error")
    assert result["backend"] == keras.backend.backend()
    for variant in ("mae", "ccmim"):
        record = result["variants"][variant]
        seconds = record["median_step_seconds"]
        assert seconds > 0
        assert record["images_per_second"] == pytest.approx(BATCH / seconds)
        assert record["model_gflops_per_second"] == pytest.approx(
            record["flops_per_image"] * BATCH / seconds / 1e9)
        assert len(record["step_seconds"]) == 2
    assert result["matmul"]["float32_gflops"] > 0
    ratio = result["ccmim_to_mae"]["median_of_round_ratios"]
    assert ratio > 0


def test_step_throughput_times_the_plain_keras_reference_beside_the_library(step_report):
    report, stdout = step_report
    (result,) = report["results"]
    reference, mae = result["variants"]["reference_mae"], result["variants"]["mae"]
    # The yardstick is the same MAE step: the same shapes and FLOPs.
    assert reference["flops_per_image"] == mae["flops_per_image"]
    assert reference["library_mae_flops_per_image"] == mae["flops_per_image"]
    assert reference["config"]["image_size"] == mae["config"]["image_size"]
    assert reference["images_per_second"] > 0 and len(reference["step_seconds"]) == 2
    ratio = result["mae_to_reference"]["median_of_round_ratios"]
    assert ratio > 0
    assert "reference MAE (plain Keras" in stdout


def test_step_throughput_flops_follow_the_spec_formula(step_report):
    report, _ = step_report
    variants = report["results"][0]["variants"]
    d, dd, n, v, k = 32, 16, 16, 4, 12
    embed = 2 * n * (4 * 4 * 3) * d
    student = _block_flops(1 + v, d)
    decoder = _block_flops(1 + n, dd)
    mae = 3 * (embed + student + decoder)
    # ccMIM adds the no-gradient scoring pass over all patches and the
    # no-gradient teacher pass over the masked set.
    ccmim = mae + _block_flops(1 + n, d) + _block_flops(1 + k, d)
    assert variants["mae"]["flops_per_image"] == mae
    assert variants["ccmim"]["flops_per_image"] == ccmim
    floor = report["results"][0]["ccmim_to_mae"]["flop_floor"]
    assert floor == pytest.approx(ccmim / mae)


def test_step_throughput_reprints_its_json(step_report, tmp_path):
    report, _ = step_report
    path = tmp_path / "again.json"
    path.write_text(json.dumps(report))
    stdout = _run("step_throughput.py", [f"--reprint={path}"])
    assert f"| {keras.backend.backend()} |" in stdout


@only_on_plumbing_backend
def test_input_pipeline_compares_with_the_step(step_report, tmp_path):
    report, _ = step_report
    step_json = tmp_path / "step.json"
    step_json.write_text(json.dumps(report))
    output = tmp_path / "pipeline.json"
    stdout = _run("input_pipeline.py", [
        "--datasets=synthetic_objects", "--image_size=16", "--batch_size=8",
        "--warmup_batches=1", "--batches=3", "--repeats=2",
        f"--step_json={step_json}", f"--output={output}",
    ])
    assert "| synthetic_objects train |" in stdout
    (result,) = json.loads(output.read_text())["results"]
    assert result["images_per_second"] > 0
    step_rate = max(r["images_per_second"] for r in report["results"][0]["variants"].values())
    assert result["step"]["images_per_second"] == pytest.approx(step_rate)
    assert result["headroom"] == pytest.approx(result["images_per_second"] / step_rate)


SHARED_TFDS_DIR = os.path.join(os.path.dirname(REPO), "shared", "data", "tfds")


@only_on_plumbing_backend
def test_cifar10_study_writes_its_table_and_curves(tmp_path):
    if not os.path.isdir(os.path.join(SHARED_TFDS_DIR, "cifar10_jpeg")):
        pytest.skip("the shared cifar10_jpeg is not beside the repository")
    out = tmp_path / "study"
    _run("cifar10_study.py", [
        f"--output_dir={out}", f"--data_dir={SHARED_TFDS_DIR}", "--variants=mae,ccmim",
        "--epochs=1", "--num_images=256", "--batch_size=64", "--points_per_epoch=2",
        "--num_layers=1", "--synthetic_epochs=1", "--synthetic_images=128",
        "--probe_train_images=500", "--probe_epochs=1",
    ])
    summary = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["mae", "ccmim", "random init"]
    # Each finished variant's row is kept, and a rerun reads it instead of training.
    assert sorted(p.name for p in (out / "rows").iterdir()) == ["ccmim.json", "mae.json",
                                                               "random_init.json"]
    assert [r["seed"] for r in summary["rows"]] == [0, 0, 0]
    for row in summary["rows"][:2]:
        assert row["steps"] == 4  # 256 images / 64 per batch, logged at 2 points
        assert row["num_eval"] == 5000 and row["num_probe_train"] == 500
        assert 0 <= row["knn_top1"] <= 100 and 0 <= row["probe_top1"] <= 100
    # Two points per epoch: two entries per loss curve, the foreground lift
    # logged on synthetic_objects.
    assert len(summary["cifar10_history"]["ccmim"]["reconstruction_loss"]) == 2
    assert len(summary["synthetic_history"]["ccmim"]["foreground_lift"]) == 2
    for name in ("results.md", "curves_cifar10.png", "curves_synthetic.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "results.md").read_text()
    (out / "results.md").unlink()
    _run("cifar10_study.py", [f"--output_dir={out}", "--replot"])
    assert (out / "results.md").read_text() == table
    rerun = _run("cifar10_study.py", [
        f"--output_dir={out}", f"--data_dir={SHARED_TFDS_DIR}", "--variants=ccmim",
        "--synthetic_epochs=0"])
    assert "ccmim: done before" in rerun
    summary = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["ccmim", "random init"]


@only_on_plumbing_backend
def test_selectivity_study_writes_its_table_and_curves(tmp_path):
    out = tmp_path / "selectivity"
    args = [f"--output_dir={out}", "--temperatures=1", "--default_score_temperatures=",
            "--score_from=probabilities", "--score_layers=all", "--num_images=128",
            "--num_layers=1", "--batch_size=32", "--points=2", "--steps_per_point=2",
            "--lift_images=32"]
    _run("selectivity_study.py", args)
    summary = json.loads((out / "results.json").read_text())
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["probabilities/all T=1", "probabilities/all T=1->0.1",
                      "probabilities/all top-K", "random"]
    for run in summary["runs"]:
        assert run["steps"] == 4 and len(run["history"]["mask_selectivity"]) == 2
        f = run["final"]
        assert f["mask_selectivity"] == pytest.approx(
            (f["foreground_lift"] - 1) / (f["foreground_lift_max"] - 1), rel=1e-4, abs=1e-6)
    # The annealed run logs its temperature; top-K's sampled masks are its scores' top-K.
    assert summary["runs"][1]["history"]["sampling_temperature"][-1] == pytest.approx(0.1)
    top_k = summary["runs"][2]
    assert top_k["history"]["score_selectivity"] == pytest.approx(top_k["history"]["mask_selectivity"])
    assert (out / "selectivity.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert table.count("\n") == 2 + len(labels)
    (out / "results.md").unlink()
    assert "study wall time" in _run("selectivity_study.py", [f"--output_dir={out}", "--replot"])
    assert (out / "results.md").read_text() == table
    # Finished runs are kept: a second call trains nothing and gives the same table.
    _run("selectivity_study.py", args)
    assert (out / "results.md").read_text() == table


def test_keras_path_variant_swaps_the_backend_specific_function_while_open():
    from benchmarks.step_models import check_variant, keras_path
    from keras_ccmim import backend_specific

    library = backend_specific.layer_norm_fn
    with keras_path("mae-keras_layer_norm"):
        assert backend_specific.layer_norm_fn() is None  # Keras' own LayerNorm runs
    assert backend_specific.layer_norm_fn is library
    with keras_path("mae"):
        assert backend_specific.layer_norm_fn is library
    assert check_variant("ccmim-keras_layer_norm") is None
    assert "unknown path 'keras_softmax'" in check_variant("mae-keras_softmax")
    assert "unknown step" in check_variant("vit-keras_layer_norm")


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="the path is JAX-on-CPU's")
def test_step_throughput_times_keras_layer_norm_beside_the_library(tmp_path):
    output = tmp_path / "paths.json"
    flags = [f"--{k}={v}" for k, v in TINY.items()]
    stdout = _run("step_throughput.py", [
        *flags, f"--batch_size={BATCH}", "--backends=jax", "--variants=mae,mae-keras_layer_norm",
        "--cpu_threads=1", "--warmup_steps=1", "--steps=2", "--repeats=2", "--matmul_size=128",
        "--matmul_repeats=2", f"--output={output}"])
    (result,) = json.loads(output.read_text())["results"]
    ratio = result["keras_path_to_library"]["mae-keras_layer_norm"]
    records = result["variants"]
    assert len(ratio["round_ratios"]) == len(ratio["cpu_round_ratios"]) == 2
    for index in range(2):
        assert ratio["round_ratios"][index] == pytest.approx(
            records["mae-keras_layer_norm"]["step_seconds"][index]
            / records["mae"]["step_seconds"][index])
        assert ratio["cpu_round_ratios"][index] == pytest.approx(
            records["mae-keras_layer_norm"]["cpu_step_seconds"][index]
            / records["mae"]["cpu_step_seconds"][index])
    assert "jax mae with keras_layer_norm:" in stdout and "CPU time" in stdout
    refused = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "step_throughput.py"),
         "--variants=mae-keras_softmax"], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=REPO))
    assert refused.returncode == 2 and refused.stderr.startswith("Error: --variants: unknown path")
