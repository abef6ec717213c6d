"""The notebook-style example runs as written."""

import csv
import math
import runpy
from pathlib import Path

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pretrain_in_notebook.py"


def test_pretrain_in_notebook_example(tmp_path, monkeypatch):
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path))
    namespace = runpy.run_path(str(EXAMPLE), run_name="__main__")
    history = namespace["history"].history
    assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["loss"])
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "foreground_lift" in rows[0]
    assert (tmp_path / "masks.png").stat().st_size > 0
    from keras_ccmim import ViTEncoder

    encoder = ViTEncoder.from_preset(str(tmp_path / "encoder"))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(encoder.weights[0]),
        keras.ops.convert_to_numpy(namespace["model"].encoder.weights[0]))
