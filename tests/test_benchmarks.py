"""The benchmark scripts run end to end on a tiny model and report figures
that agree with the spec's FLOP formula and with each other.

They are run as a user runs them (a subprocess from the repository root);
the speed itself is never asserted (that is what the scripts are for).
"""

import json
import re
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


def _run_refused(script, args, backend):
    """`(returncode, stdout + stderr)` of a run of `script` on `backend` that
    is meant to be refused."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


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


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="profiles the XLA step; JAX's trace has per-op events")
def test_profile_step_groups_op_time_by_kind():
    stdout = _run("profile_step.py", ["--batch_size=4", "--warmup_steps=1", "--steps=1", "--top=5"])
    assert "| op kind | ms per step | share |" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "%" in line]
    assert rows, stdout
    shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in rows]
    assert all(0 < s <= 100 for s in shares) and shares == sorted(shares, reverse=True)


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="joins an XLA trace with XLA's HLO dump")
def test_profile_step_hlo_breakdown_counts_the_steps_matmul_flops():
    # The dots XLA compiled must add up to the FLOPs keras_ccmim.flops counts
    # for the same MAE step (an independent formula); a dot missed or counted
    # twice moves the ratio by a block's share.
    stdout = _run("profile_step.py", ["--batch_size=4", "--warmup_steps=1", "--steps=1", "--top=5",
                                      "--hlo_breakdown"])
    match = re.search(r"dots: (\d+) per step, .* ([\d.]+) MFLOP per image against "
                      r"keras_ccmim.flops' ([\d.]+) \(ratio ([\d.]+)\)", stdout)
    assert match, stdout
    assert int(match.group(1)) > 12 * 6  # six dots per block and direction at least
    assert 0.97 < float(match.group(4)) < 1.03, stdout
    assert "| lhs | rhs | contracting (lhs; rhs) |" in stdout and "| op kind | source op |" in stdout
    assert "block_N" in stdout  # the other ops grouped by their source op, blocks folded


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="needs an XLA backend")
def test_profile_step_hlo_breakdown_refuses_torch():
    returncode, output = _run_refused("profile_step.py", ["--hlo_breakdown"], "torch")
    assert returncode != 0 and "needs an XLA backend" in output


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="A/B of the JAX step's compiled variants")
def test_jax_cpu_ab_times_path_and_option_variants_side_by_side(tmp_path):
    out = tmp_path / "ab.json"
    stdout = _run("jax_cpu_ab.py", [
        "--batch_size=4", "--num_layers=1", "--rounds=2", "--steps=1",
        "--paths=library,stock_layer_norm",
        "--xla_options=serial:xla_cpu_enable_concurrency_optimized_scheduler=false",
        f"--output={out}"])
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == ["library", "serial", "stock_layer_norm"], stdout
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["rows"]] == ["library", "serial", "stock_layer_norm"]
    assert result["rows"][0]["time_ratio"] == 1.0
    assert result["rows"][1]["options"] == {"xla_cpu_enable_concurrency_optimized_scheduler": False}
    assert all(len(r["step_seconds"]) == 2 and r["median_step_seconds"] > 0 for r in result["rows"])
    assert "cores" in result["machine"]


@only_on_plumbing_backend
@pytest.mark.parametrize("args, message", [
    (["--paths=library,stock_softmax"], "unknown 'stock_softmax'"),
    (["--xla_options=serial"], "is not name:key=value"),
    (["--xla_options=library:xla_cpu_ftz=true"], "used twice"),
])
def test_jax_cpu_ab_refuses_bad_variants(args, message):
    returncode, output = _run_refused("jax_cpu_ab.py", args, "jax")
    assert returncode != 0 and message in output, output[-2000:]


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="times XLA-compiled kernels")
def test_kernel_alone_reports_rates_that_match_its_times():
    stdout = _run("kernel_alone.py", ["--matmul_shapes=256x64x128,64x256x32", "--gelu_shape=64x32",
                                      "--repeats=3"])
    matmuls = re.findall(r"matmul \[(\d+),(\d+)\] x \[\d+,(\d+)\]: ([\d.]+) ms, (\d+) GFLOP/s", stdout)
    assert [m[:3] for m in matmuls] == [("256", "64", "128"), ("64", "256", "32")], stdout
    for m, k, n, ms, rate in matmuls:
        expected = 2 * int(m) * int(k) * int(n) / (float(ms) / 1e3) / 1e9
        assert abs(float(rate) - expected) <= 0.02 * expected + 1, stdout
    gelu = re.search(r"erf GELU \[64,32\]: ([\d.]+) ms, ([\d.]+) ns per element", stdout)
    assert gelu and abs(float(gelu.group(2)) - 1e6 * float(gelu.group(1)) / (64 * 32)) < 0.01 * float(
        gelu.group(2)) + 0.002, stdout
    assert "machine: " in stdout


@only_on_plumbing_backend
@pytest.mark.parametrize("backend, args, message", [
    ("torch", [], "KERAS_BACKEND=jax or tensorflow"),
    ("jax", ["--matmul_shapes=4x4"], "is not 3 positive integers"),
])
def test_kernel_alone_refuses_bad_input(backend, args, message):
    returncode, output = _run_refused("kernel_alone.py", args, backend)
    assert returncode != 0 and message in output, output[-2000:]


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="profiles the eager torch step")
@pytest.mark.parametrize("model", ["library", "reference"])
def test_profile_step_splits_the_torch_step_into_aten_ops(model):
    stdout = _run("profile_step.py", ["--batch_size=4", "--warmup_steps=1", "--steps=1",
                                      "--top=5", f"--model={model}"])
    assert f"torch mae step ({model})" in stdout and "aten ops dispatched per step" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| aten::")]
    assert len(rows) == 5, stdout
    shares = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in rows]
    assert all(0 < s <= 100 for s in shares) and shares == sorted(shares, reverse=True)


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


@only_on_plumbing_backend
def test_plain_torch_mae_has_the_library_shapes(tmp_path):
    """benchmarks/plain_torch_mae.py: the plain-PyTorch MAE has exactly the
    library's MAE parameters and both steps are timed."""
    output = tmp_path / "plain.json"
    stdout = _run("plain_torch_mae.py", ["--batch_size=4", "--repeats=1", "--steps=1",
                                          "--warmup_steps=1", "--profile_steps=1",
                                          f"--output={output}"])
    summary = json.loads(output.read_text())
    assert summary["parameters"]["plain"] == summary["parameters"]["library"] == 5_776_176
    assert all(rate > 0 for rate in summary["images_per_second"].values())
    assert "library / plain PyTorch step time" in stdout
    profiles = summary["profiles"]
    assert set(profiles) == {"library", "plain"}
    assert profiles["plain"]["ops"]["aten::addmm"] > 0 and "| aten::mm |" in stdout
