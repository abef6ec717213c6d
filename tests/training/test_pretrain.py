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
    assert 0.0 <= results.foreground_lift <= results.foreground_lift_max <= 1.0 / 0.1
    assert results.mask_selectivity == pytest.approx(
        (results.foreground_lift - 1) / (results.foreground_lift_max - 1), rel=1e-5)
    assert set(results.random_masking) == {"foreground_lift", "foreground_lift_max",
                                           "mask_selectivity"}
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert "foreground lift" in last and "of at most" in last and "selectivity" in last
    assert "random masking on the same images" in last

    saved = PretrainConfig.load(os.path.join(workdir, "config.json"))
    assert saved.steps_per_epoch == 3 and saved.hidden_dim == 32

    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert {"loss", "reconstruction_loss", "contrastive_loss", "foreground_lift",
            "foreground_lift_max", "mask_selectivity", "learning_rate"} == set(rows[0]) - {"epoch"}
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
        saved = json.load(f)
    assert saved["final_loss"] == pytest.approx(results.final_loss)
    for name in ("foreground_lift", "foreground_lift_max", "mask_selectivity"):
        assert saved[name] == pytest.approx(getattr(results, name))

    # The same command again finds the run finished and trains no more.
    again = pretrain(values)
    assert again.initial_step == again.global_step == 6
    assert again.final_loss == pytest.approx(results.final_loss)
    assert "training already finished" in capsys.readouterr().out

    # A different run in the same workdir is refused.
    with pytest.raises(ValueError, match=r"different configuration \(fields \['mask_ratio'\]"):
        pretrain(dict(values, mask_ratio=0.5))


def test_temperature_schedule_position_resumes_with_the_run(tiny_run):
    values = tiny_run(sampling_temperature_start=1.0, sampling_temperature=0.1,
                      sampling_temperature_steps=6, epochs=1)
    first = pretrain(values)
    assert first.global_step == 3
    resumed = pretrain(dict(values, epochs=2))  # epochs may change on resume
    assert resumed.initial_step == 3 and resumed.global_step == 6
    model = keras.saving.load_model(resumed.paths["pretrainer"])
    assert float(keras.ops.convert_to_numpy(model.selector.temperature_step)) == 6.0
    with open(resumed.paths["metrics"]) as f:
        temperatures = [float(row["sampling_temperature"]) for row in csv.DictReader(f)]
    # After 3 of 6 steps the half cosine is half way (0.55); at 6 it is at 0.1.
    assert temperatures == pytest.approx([0.55, 0.1], rel=1e-5)
