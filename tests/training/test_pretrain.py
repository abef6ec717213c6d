"""`pretrain` end to end on a tiny run: every output of the workdir."""

import csv
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
from PIL import Image

from keras_ccmim import training
from tests.testing_utils import read_events
from keras_ccmim.training import (
    CheckpointError,
    ConfigError,
    PretrainConfig,
    pretrain,
)
from keras_ccmim.models import load_encoder
from keras_ccmim.pictures import LABEL_HEIGHT
from keras_ccmim.training.nan_guard import NAN_ADVICE_BLR

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml


def test_pretrain_writes_the_workdir_and_resumes_a_finished_run(tiny_run, library_messages):
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
    out = library_messages.read()
    last = out.strip().splitlines()[-1]
    assert "foreground lift" in last and "of at most" in last and "selectivity" in last
    assert "random masking on the same images" in last

    saved = PretrainConfig.load(os.path.join(workdir, "config.json"))
    assert saved.steps_per_epoch == 3 and saved.hidden_dim == 32

    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert {"loss", "reconstruction_loss", "contrastive_loss", "foreground_lift",
            "foreground_lift_max", "mask_selectivity", "score_selectivity",
            "learning_rate"} == set(rows[0]) - {"epoch"}
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.0, abs=1e-9)

    events = os.listdir(os.path.join(workdir, "tensorboard", "train"))
    assert any(name.startswith("events.out.tfevents") for name in events)
    # The epoch scalars and the masks picture of each epoch.
    summaries, plugins = read_events(os.path.join(workdir, "tensorboard", "train"))
    for tag in ("epoch_loss", "epoch_foreground_lift", "epoch_learning_rate", "masks"):
        assert [step for step, _ in summaries[tag]] == [0, 1], tag
    assert plugins["masks"] == "images" and plugins["epoch_loss"] == "scalars"
    assert summaries["masks"][0][1].shape[-1] == 3

    checkpoints = os.path.join(workdir, "checkpoints")
    assert json.load(open(os.path.join(checkpoints, "checkpoint.json")))["global_step"] == 6
    assert sorted(n for n in os.listdir(checkpoints) if n.endswith(".h5")) == [
        "ckpt-00000004.weights.h5", "ckpt-00000006.weights.h5"
    ]

    picture = Image.open(os.path.join(workdir, "masks.png"))
    # One row for each of 8 images of 16 px (x6), 2 px gaps, under the labels
    # image, masked input, reconstruction, importance.
    assert picture.size == (4 * 98 + 2, LABEL_HEIGHT + 8 * 98 + 2)

    # The encoder is a preset in keras-hub's layout, loaded by the one loader
    # and by ViTEncoder.from_preset.
    preset = os.path.join(workdir, "encoder")
    assert results.paths["encoder"] == preset
    assert sorted(os.listdir(preset)) == [
        "config.json", "metadata.json", "model.weights.h5", "preprocessing.json"]
    with open(os.path.join(preset, "config.json")) as f:
        assert json.load(f)["registered_name"] == "keras_ccmim>ViTEncoder"
    with open(os.path.join(preset, "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["keras_version"] == keras.__version__ and metadata["parameter_count"] > 0
    encoder = load_encoder(workdir)
    pretrainer = keras.saving.load_model(os.path.join(workdir, "pretrainer.keras"))
    images = np.random.RandomState(0).randn(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(encoder(images)),
        keras.ops.convert_to_numpy(pretrainer.encoder(images)),
        rtol=1e-5, atol=1e-5,
    )
    from keras_ccmim import ViTEncoder

    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(ViTEncoder.from_preset(preset)(images)),
        keras.ops.convert_to_numpy(encoder(images)))
    with open(results.paths["results"]) as f:
        saved = json.load(f)
    assert saved["final_loss"] == pytest.approx(results.final_loss)
    for name in ("foreground_lift", "foreground_lift_max", "mask_selectivity"):
        assert saved[name] == pytest.approx(getattr(results, name))

    # The same command again finds the run finished and trains no more; it
    # keeps the history, and the same weights give the same figures.
    again = pretrain(values)
    assert again.initial_step == again.global_step == 6
    assert again.final_loss == pytest.approx(results.final_loss)
    assert "training already finished" in library_messages.read()
    with open(results.paths["results"]) as f:
        rewritten = json.load(f)
    assert rewritten["history"] == saved["history"] == again.history
    assert len(rewritten["history"]["loss"]) == 2
    for name in ("foreground_lift", "foreground_lift_max", "mask_selectivity"):
        assert rewritten[name] == saved[name] == getattr(results, name)

    # A different run in the same workdir is refused.
    with pytest.raises(ValueError, match=r"different configuration: mask_ratio: 0.75 -> 0.5\. "):
        pretrain(dict(values, mask_ratio=0.5))

    # Moved, with settings that do not change what is trained, it is the same run.
    moved = os.path.join(os.path.dirname(workdir), "moved")
    shutil.copytree(workdir, moved)
    library_messages.read()
    elsewhere = pretrain(dict(values, workdir=moved, keep_checkpoints=3, jit_compile=False,
                              tensorboard_every_steps=0, distribution="none"))
    assert elsewhere.initial_step == elsewhere.global_step == 6
    out = library_messages.read()
    assert "training already finished" in out and "changed configuration" not in out


def test_temperature_schedule_position_resumes_with_the_run(tiny_run, library_messages):
    values = tiny_run(sampling_temperature_start=1.0, sampling_temperature=0.1,
                      sampling_temperature_steps=6, epochs=1)
    first = pretrain(values)
    assert first.global_step == 3
    config_path = os.path.join(values["workdir"], "config.json")
    checkpoints = sorted(os.listdir(os.path.join(values["workdir"], "checkpoints")))

    # A longer run changes the schedule: refused before any step, naming
    # the change and both ways on, unless asked for.
    with pytest.raises(ConfigError, match=r"configuration: epochs: 1 -> 2\. ") as error:
        pretrain(dict(values, epochs=2))
    assert "--allow_config_change" in str(error.value) and "--fresh" in str(error.value)
    assert "--resume_from_step" not in str(error.value)  # epochs is no NaN-advice knob
    # The NaN advice's knobs may change when training on from a checkpoint.
    with pytest.raises(ConfigError, match=r"configuration: blr: 0.0015 -> 0.0001\. .*\(blr "
                       r"may change without --allow_config_change when --resume_from_step"):
        pretrain(dict(values, blr=1e-4))
    assert PretrainConfig.load(config_path).epochs == 1
    assert sorted(os.listdir(os.path.join(values["workdir"], "checkpoints"))) == checkpoints
    library_messages.read()
    resumed = pretrain(dict(values, epochs=2, allow_config_change=True))
    changed = [line for line in library_messages.read().splitlines() if "changed config" in line]
    assert changed == ["Training on with a changed configuration (allow_config_change): "
                       "epochs: 1 -> 2; config.json is updated."]
    assert PretrainConfig.load(config_path).epochs == 2
    assert resumed.initial_step == 3 and resumed.global_step == 6
    model = keras.saving.load_model(resumed.paths["pretrainer"])
    assert float(keras.ops.convert_to_numpy(model.selector.temperature_step)) == 6.0
    with open(resumed.paths["metrics"]) as f:
        temperatures = [float(row["sampling_temperature"]) for row in csv.DictReader(f)]
    # After 3 of 6 steps the half cosine is half way (0.55); at 6 it is at 0.1.
    assert temperatures == pytest.approx([0.55, 0.1], rel=1e-5)


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_a_deleted_pointer_resumes_from_the_log_and_keeps_the_run(tiny_run, library_messages):
    # score_layers as a tuple: config.json reads it back as a list, which is
    # no change.
    values = tiny_run(epochs=1, score_layers=(0, 1))
    pretrain(values)
    workdir = values["workdir"]
    checkpoints = os.path.join(workdir, "checkpoints")
    events = sorted(os.listdir(os.path.join(workdir, "tensorboard", "train")))
    os.remove(os.path.join(checkpoints, "checkpoint.json"))

    # The config is still checked against the checkpointed run.
    with pytest.raises(ConfigError, match=r"configuration: mask_ratio: 0.75 -> 0.5\. "):
        pretrain(dict(values, mask_ratio=0.5))
    library_messages.read()

    resumed = pretrain(dict(values, epochs=2, allow_config_change=True))  # a longer run
    assert resumed.initial_step == 3 and resumed.global_step == 6
    out = library_messages.read()
    assert "ckpt-00000003.weights.h5 (step 3, found through checkpoints.jsonl)" in out
    assert "(allow_config_change): epochs: 1 -> 2; config.json" in out  # not score_layers
    assert [row["epoch"] for row in _rows(workdir)] == ["0", "1"]  # epoch 0 kept
    assert set(events) <= set(os.listdir(os.path.join(workdir, "tensorboard", "train")))
    assert len(resumed.history["loss"]) == 2  # the first call's epoch, then this one's


def test_a_truncated_newest_checkpoint_falls_back_to_the_older_one(tiny_run, library_messages):
    values = tiny_run(epochs=1, checkpoint_every_steps=1)
    pretrain(values)
    checkpoints = os.path.join(values["workdir"], "checkpoints")
    _truncate(os.path.join(checkpoints, "ckpt-00000003.weights.h5"))
    library_messages.read()

    resumed = pretrain(values)
    assert resumed.initial_step == 2 and resumed.global_step == 3
    out = library_messages.read()
    assert "ckpt-00000003.weights.h5 cannot be loaded" in out
    assert "ckpt-00000002.weights.h5 (step 2, found through checkpoints.jsonl)" in out

    # With every checkpoint damaged: a clear error, and nothing deleted.
    for name in os.listdir(checkpoints):
        if name.endswith(".h5"):
            _truncate(os.path.join(checkpoints, name))
    before = sorted(os.listdir(checkpoints))
    with pytest.raises(CheckpointError, match="No intact checkpoint is left"):
        pretrain(values)
    assert sorted(os.listdir(checkpoints)) == before


def test_a_run_without_a_checkpoint_starts_again_unless_its_config_changed(
        tiny_run, library_messages):
    # A workdir whose run left metrics and config.json but no checkpoint (its
    # checkpoints were lost, or it was killed between the first epoch's
    # metrics and its first checkpoint): the same command starts it again
    # from step 0, with the earlier files kept aside; another config is
    # refused; fresh=True always starts over.
    values = tiny_run(epochs=1)
    pretrain(values)
    workdir = values["workdir"]
    checkpoints = os.path.join(workdir, "checkpoints")
    for name in os.listdir(checkpoints):
        os.remove(os.path.join(checkpoints, name))
    notes = os.path.join(workdir, "notes.txt")
    with open(notes, "w") as f:
        f.write("the user's own file")
    with open(os.path.join(workdir, "metrics.csv")) as f:
        old_metrics = f.read()

    with pytest.raises(ConfigError, match=r"holds the files of a run that stopped before its "
                       r"first checkpoint with a different configuration: seed: 0 -> 1\."):
        pretrain(dict(values, seed=1))
    with open(os.path.join(workdir, "metrics.csv")) as f:
        assert f.read() == old_metrics

    library_messages.read()
    again = pretrain(values)
    assert again.initial_step == 0 and again.global_step == 3
    message = library_messages.read()
    assert "stopped before its first checkpoint" in message and "previous-1" in message
    with open(os.path.join(workdir, "previous-1", "metrics.csv")) as f:
        assert f.read() == old_metrics
    assert os.path.exists(os.path.join(workdir, "previous-1", "results.json"))
    with open(notes) as f:
        assert f.read() == "the user's own file"
    assert len(_rows(workdir)) == 1

    library_messages.read()
    fresh = pretrain(values, fresh=True)
    assert fresh.initial_step == 0 and fresh.global_step == 3
    assert "previous-2" in library_messages.read()

    # fresh=True as a config field does the same, keeping the run before too.
    again = pretrain(dict(values, fresh=True))
    assert again.initial_step == 0
    assert os.path.exists(os.path.join(workdir, "previous-3", "checkpoints",
                                       "ckpt-00000003.weights.h5"))
    with pytest.raises(ConfigError, match="fresh must be True or False"):
        pretrain(values, fresh="yes")


def test_following_the_nan_advice_trains_on(tiny_run, library_messages):
    # blr=1e6 diverges within a few steps: the weights are finite but huge
    # before the loss is NaN, so "resume from the last finite checkpoint
    # with a lower blr" would NaN again. The advice names a checkpoint from
    # before the blow-up (or a fresh start) and a blr that trains.
    values = tiny_run(epochs=1, steps_per_epoch=10, warmup_epochs=0.1,
                      checkpoint_every_steps=1, blr=1e6)
    with pytest.raises(training.NonFiniteLossError) as error:
        pretrain(values)
    message = str(error.value)
    advice = re.search(r"rerun the same command with ((?:--[\w.]+(?:=\S+)? ?)+)", message)
    assert advice, message
    flags = {}
    for flag in advice.group(1).split():
        name, _, value = flag[2:].removeprefix("config.").partition("=")
        flags[name] = True if not value else (float(value) if "." in value or "e" in value
                                              else int(value))
    assert flags["blr"] == NAN_ADVICE_BLR, message
    assert ("resume_from_step" in flags) != ("fresh" in flags), message
    if "resume_from_step" in flags:
        kept = os.path.join(values["workdir"], "checkpoints",
                            "ckpt-%08d.weights.h5" % flags["resume_from_step"])
        assert os.path.exists(kept), message

    library_messages.read()
    results = pretrain(dict(values, **flags))
    assert results.global_step == 10
    if "resume_from_step" in flags:  # a deliberate restart may change blr
        assert (f"Training on from step {flags['resume_from_step']} with blr: 1000000.0 -> "
                "0.0015; config.json is updated.") in library_messages.read()
    assert np.isfinite(results.final_loss)
    weights = [keras.ops.convert_to_numpy(w) for w in load_encoder(results.workdir).weights]
    assert all(np.all(np.isfinite(w)) for w in weights)
    assert np.max([np.max(np.abs(w)) for w in weights]) < 100


def test_resume_from_step_and_fresh_contradict(tiny_run):
    with pytest.raises(ValueError, match="fresh and resume_from_step contradict"):
        pretrain(tiny_run(fresh=True, resume_from_step=2))
    with pytest.raises(ValueError, match="resume_from_step"):
        pretrain(tiny_run(resume_from_step=0))
