"""The example notebook runs cell by cell, as Jupyter runs it, on the current
backend (tiny sizes), and leaves its outputs: the fit's progress bar, the
labelled masks picture inline, the exported encoder and its probe beside a
random encoder. The tiny run is too short to pretrain anything, so it checks
the probe's output and no gain; the notebook claims one at its full size
only, where it was measured."""

import csv
import json
import math
from pathlib import Path

import keras
import pytest

pytestmark = pytest.mark.slow  # a kernel start and a pretraining: see pyproject.toml

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "pretrain_ccmim.ipynb"


def test_notebook_runs_every_cell_and_shows_its_pictures(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.setenv("KERAS_BACKEND", keras.backend.backend())  # the kernel inherits it
    monkeypatch.setenv("CCMIM_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, naming the cell, on any error.
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = lambda cell: "".join(  # noqa: E731
        o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
        for o in cell.outputs)
    assert f"backend: {keras.backend.backend()}" in text(code[0])
    fit = next(cell for cell in code if "model.fit(" in cell.source)
    assert "4/4" in text(fit), text(fit)  # the progress bar of every step
    pictures = [cell for cell in code if any("image/png" in o.get("data", {}) for o in cell.outputs)]
    assert pictures and "reconstruction_grid" in pictures[0].source
    with open(tmp_path / "out" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "out" / "encoder" / "config.json").exists()
    probe = code[-1].outputs[-1]["data"]["text/plain"]
    probe = json.loads(probe.replace("'", '"'))
    assert set(probe) == {"pretrained", "random init"}
    for scores in probe.values():
        assert set(scores) == {"knn_top1", "linear_top1"}
        assert 0 <= scores["knn_top1"] <= 100 and 0 <= scores["linear_top1"] <= 100
    # The gain is claimed for the full size alone, in the text after the probe.
    claim = notebook.cells[-1]
    assert claim.cell_type == "markdown" and "CCMIM_NOTEBOOK_TINY" in claim.source
