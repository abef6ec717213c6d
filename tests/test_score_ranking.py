"""benchmarks/score_ranking.py: both scores' rankings on the models that
`selectivity_study.py --sweep=mask_ratio` trains, and its per-head
statistics against hand computations."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.testing_utils import only_on_plumbing_backend

pytestmark = pytest.mark.slow  # pretrains in a subprocess: see pyproject.toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    # This checkout's benchmarks/ first, wherever the editable install points.
    env["PYTHONPATH"] = os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_head_statistics_and_top_k_by_hand():
    from benchmarks.score_ranking import head_spread, top_k_mask

    # One block, one image, two heads, four patches; patch 0 is the object.
    logits = np.array([[[[3.0, 1.0, 1.0, -1.0], [-3.0, 1.0, -1.0, 1.0]]]])
    foreground = np.array([[1.0, 0.0, 0.0, 0.0]])
    stats = head_spread(logits, foreground)
    # Each head's row standardised over the patches.
    z = (logits - logits.mean(-1, keepdims=True)) / logits.std(-1, keepdims=True)
    z = z[0, 0]  # [H, N]
    assert stats["spread"]["object"] == pytest.approx(np.std(z[:, 0]))
    assert stats["spread"]["background"] == pytest.approx(np.mean(np.std(z[:, 1:], axis=0)))
    assert stats["highest_head"]["object"] == pytest.approx(z[:, 0].max())
    assert stats["lowest_head"]["object"] == pytest.approx(z[:, 0].min())
    assert stats["head_mean"]["background"] == pytest.approx(z[:, 1:].mean())
    # The object is the extreme of both heads: high spread, highest and lowest head.
    assert stats["spread"]["object"] > stats["spread"]["background"]
    np.testing.assert_array_equal(top_k_mask(np.array([[0.1, 0.4, 0.3, 0.2]]), 2),
                                  [[0.0, 1.0, 1.0, 0.0]])


@only_on_plumbing_backend
def test_mask_ratio_sweep_and_score_ranking(tmp_path):
    runs = tmp_path / "runs"
    _run("selectivity_study.py", [
        f"--output_dir={runs}", "--sweep=mask_ratio", "--mask_ratios=0.25,0.75",
        "--num_images=128", "--num_layers=2", "--batch_size=32", "--points=2",
        "--steps_per_point=2", "--lift_images=32"])
    summary = json.loads((runs / "results.json").read_text())
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["probabilities/all r=0.25", "probabilities/all r=0.75",
                      "logits/all r=0.25", "logits/all r=0.75"]
    assert [r["overrides"]["mask_ratio"] for r in summary["runs"]] == [0.25, 0.75] * 2
    table = (runs / "results.md").read_text()
    assert "random masking's selectivity std" in table and table.count("\n") == 2 + len(labels)

    out = tmp_path / "ranking"
    stdout = _run("score_ranking.py", [f"--runs_dir={runs}", f"--output_dir={out}",
                                       "--mask_ratios=0.25,0.5,0.75"])
    result = json.loads((out / "score_ranking.json").read_text())
    assert sorted(m["label"] for m in result["models"]) == sorted(labels)
    for model in result["models"]:
        # The per-head logits computed here average to the encoder's own map.
        assert model["cls_attention_check_max_abs"] < 1e-4
        assert model["geometric_mean_top_k_equal"]
        assert list(model["top_k_selectivity"]["logits"]) == ["16", "32", "48"]
        # The study's own score top-K selectivity (its model's scores, at its
        # K) is the one computed here for the trained score at that K.
        trained = model["trained_with"]
        k = str(int(round(64 * trained["mask_ratio"])))
        assert model["top_k_selectivity"][trained["score_from"]][k] == pytest.approx(
            model["study_score_selectivity"], abs=1e-6)
        for score in ("logits", "probabilities"):
            share = model["visible_foreground_share"][score][k]
            assert 0.0 <= share <= 1.0
    assert "z-spread over heads" in stdout and (out / "score_ranking.png").stat().st_size > 0
