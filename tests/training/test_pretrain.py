"""`pretrain` end to end on a tiny run: every output of the workdir."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

from keras_ccmim.training import PretrainConfig, load_encoder, pretrain


def test_pretrain_writes_the_workdir_and_resumes_a_finished_run(tiny_run, capsys):
    values = tiny_run(checkpoint_every_steps=2)
    results = pretrain(values)
    workdir = values["workdir"]

    assert results.global_step == 6 and results.initial_step == 0
    assert np.isfinite(results.final_loss)
    assert results.final_loss == pytest.approx(results.history["loss"][-1])
    assert 0.0 <= results.foreground_lift <= 1.0 / 0.1  # foreground covers >= ~10%
    out = capsys.readouterr().out
    assert "Final loss" in out and "foreground lift" in out

    saved = PretrainConfig.load(os.path.join(workdir, "config.json"))
    assert saved.steps_per_epoch == 3 and saved.hidden_dim == 32

    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert {"loss", "reconstruction_loss", "contrastive_loss", "foreground_lift",
            "learning_rate"} == set(rows[0]) - {"epoch"}
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.0, abs=1e-9)

    events = os.listdir(os.path.join(workdir, "tensorboard", "train"))
    assert any(name.startswith("events.out.tfevents") for name in events)

    checkpoints = os.path.join(workdir, "checkpoints")
    assert json.load(open(os.path.join(checkpoints, "checkpoint.json")))["global_step"] == 6
    assert sorted(n for n in os.listdir(checkpoints) if n.endswith(".h5")) == [
        "ckpt-00000004.weights.h5", "ckpt-00000006.weights.h5"
    ]

    picture = Image.open(os.path.join(workdir, "masks.png"))
    # Three rows (image, masked, importance) of 8 images of 16 px, 2 px gaps, x4.
    assert picture.size == ((8 * 18 + 2) * 4, (3 * 18 + 2) * 4)

    encoder = load_encoder(workdir)
    pretrainer = keras.saving.load_model(os.path.join(workdir, "pretrainer.keras"))
    images = np.random.RandomState(0).randn(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(encoder(images)),
        keras.ops.convert_to_numpy(pretrainer.encoder(images)),
        rtol=1e-5, atol=1e-5,
    )
    with open(results.paths["results"]) as f:
        assert json.load(f)["final_loss"] == pytest.approx(results.final_loss)

    # The same command again finds the run finished and trains no more.
    again = pretrain(values)
    assert again.initial_step == again.global_step == 6
    assert again.final_loss == pytest.approx(results.final_loss)
    assert "training already finished" in capsys.readouterr().out

    # A different run in the same workdir is refused.
    with pytest.raises(ValueError, match=r"different configuration \(fields \['mask_ratio'\]"):
        pretrain(dict(values, mask_ratio=0.5))
