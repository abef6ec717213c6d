"""A killed pretraining, rerun, is the run an uninterrupted one would have been.

One run is killed three times, each time at a different kind of point, and
rerun with the same config; its checkpoints and final encoder are compared
with those of an uninterrupted run of the same seed. The model draws its
masks at random (importance sampling, the default) and the data are
shuffled and augmented, so a resume that restarts the `SeedGenerator`s or
the input pipeline from the seed shows up as a difference (the first
version of the resume ended up to 1.3e-4 away).
"""

import json
import os

import h5py
import keras
import numpy as np
import pytest

from keras_ccmim.models import load_encoder
from keras_ccmim.training import pretrain
from tests.training.conftest import TINY_RUN

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

# 3 epochs of 4 steps, checkpoints every 3 steps and at epoch ends:
# steps 3, 4, 6, 8, 9, 12.
RUN = dict(epochs=3, steps_per_epoch=4, checkpoint_every_steps=3, keep_checkpoints=20, seed=3)
# Float32 on CPU; torch included (measured 0.0 on the development machine).
TOLERANCE = 1e-6


class Killed(Exception):
    """Stands for SIGKILL (tests/training/test_pretrain_binary.py sends a
    real one): raised from a callback, nothing after it runs."""


class KillAfterStep(keras.callbacks.Callback):
    """Dies once step `step` has trained, before its checkpoint (if any) is
    written: callbacks passed to `pretrain` run before `TrainingCheckpoint`."""

    def __init__(self, step):
        super().__init__()
        self.kill_step = step

    def on_train_begin(self, logs=None):
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        self._step += 1

    def on_train_batch_end(self, batch, logs=None):
        if self._step == self.kill_step:
            raise Killed(f"killed after step {self._step}")


class KillWhileSaving(KillAfterStep):
    """Dies half-way through writing the checkpoint of step `step`: the
    weights file is left truncated and the pointer still names the one
    before."""

    def on_train_batch_end(self, batch, logs=None):
        if self._step != self.kill_step:
            return
        model = self.model
        save_weights = model.save_weights

        def save_half_and_die(path, overwrite=True):
            save_weights(path, overwrite=overwrite)
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                f.truncate(size // 2)
            raise Killed(f"killed while writing {path}")

        model.save_weights = save_half_and_die


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: arrays.__setitem__(name, item[()])
            if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def _max_difference(path, reference):
    got, want = _h5_arrays(path), _h5_arrays(reference)
    assert sorted(got) == sorted(want)
    return max(
        float(np.max(np.abs(np.asarray(got[k], "float64") - np.asarray(want[k], "float64"))))
        for k in want if np.asarray(want[k]).size
    )


def _records(workdir):
    with open(os.path.join(workdir, "checkpoints", "checkpoints.jsonl")) as f:
        return {r["global_step"]: r for r in map(json.loads, f)}


def _checkpoint(workdir, step):
    return os.path.join(workdir, "checkpoints", f"ckpt-{step:08d}.weights.h5")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its workdir (all checkpoints kept)."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    pretrain(dict(TINY_RUN, **RUN, workdir=workdir))
    return workdir


def test_a_run_killed_three_times_ends_where_the_uninterrupted_run_ends(
    reference, tiny_run, library_messages, capsys
):
    values = tiny_run(**RUN)
    workdir = values["workdir"]
    figures = {}

    # 1. Right after an epoch boundary: step 5 trains, its batch is lost,
    #    the epoch-end checkpoint of step 4 remains.
    with pytest.raises(Killed):
        pretrain(values, callbacks=[KillAfterStep(5)])
    assert max(_records(workdir)) == 4

    # 2. Resumed at step 4 (a new epoch); killed while writing the epoch-end
    #    checkpoint of step 8, so only a truncated file of step 8 exists, under
    #    the temporary name a complete checkpoint is renamed from.
    with pytest.raises(Killed):
        pretrain(values, callbacks=[KillWhileSaving(8)])
    out = library_messages.read()
    assert "at step 4 (epoch 2, batch 0 of 4)" in out
    figures["after an epoch boundary (resumed at 4, checkpoint 6)"] = _max_difference(
        _checkpoint(workdir, 6), _checkpoint(reference, 6))
    partial = os.path.join(workdir, "checkpoints", ".partial-ckpt-00000008.weights.h5")
    assert os.path.getsize(partial) < os.path.getsize(_checkpoint(reference, 8))
    assert not os.path.exists(_checkpoint(workdir, 8))

    # 3. Resumed from step 6 (the pointer still names it), past the
    #    truncated file; killed mid-epoch after step 10.
    with pytest.raises(Killed):
        pretrain(values, callbacks=[KillAfterStep(10)])
    out = library_messages.read()
    assert "at step 6 (epoch 2, batch 2 of 4)" in out
    figures["during a checkpoint write (resumed at 6, checkpoint 9)"] = _max_difference(
        _checkpoint(workdir, 9), _checkpoint(reference, 9))

    # 4. Resumed mid-epoch at step 9, runs to the end.
    results = pretrain(values)
    out = library_messages.read()
    assert "at step 9 (epoch 3, batch 1 of 4)" in out
    assert results.global_step == 12
    figures["in the middle of an epoch (resumed at 9, checkpoint 12)"] = _max_difference(
        _checkpoint(workdir, 12), _checkpoint(reference, 12))
    encoder = [keras.ops.convert_to_numpy(w) for w in load_encoder(workdir).weights]
    expected = [keras.ops.convert_to_numpy(w) for w in load_encoder(reference).weights]
    figures["final encoder"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(encoder, expected))

    # The random states were saved and restored: every checkpoint records
    # what the uninterrupted run's does at the same step.
    records, expected_records = _records(workdir), _records(reference)
    for step in (3, 4, 6, 9, 12):
        assert records[step]["seed_states"] == expected_records[step]["seed_states"], step
    assert records[12]["seed_states"] != records[9]["seed_states"]

    with capsys.disabled():
        for point, difference in figures.items():
            print(f"\n[{keras.backend.backend()}] killed {point}: max |weight difference| "
                  f"{difference:.3g}")
    for point, difference in figures.items():
        assert difference <= TOLERANCE, (point, difference)


@pytest.mark.parametrize("kill", [KillAfterStep(2), KillWhileSaving(3)],
                         ids=["before the first checkpoint", "during the first save"])
def test_a_run_killed_before_its_first_checkpoint_starts_again(
    reference, tiny_run, library_messages, kill
):
    # The same command, rerun, starts from step 0 (no --fresh), keeps the
    # killed start's files aside, and ends where the uninterrupted run ends.
    values = tiny_run(**RUN)
    workdir = values["workdir"]
    with pytest.raises(Killed):
        pretrain(values, callbacks=[kill])
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "checkpoints.jsonl"))
    library_messages.read()
    results = pretrain(values)
    out = library_messages.read()
    assert "stopped before its first checkpoint" in out and "previous-1" in out, out
    assert results.initial_step == 0 and results.global_step == 12
    assert os.path.isdir(os.path.join(workdir, "previous-1", "checkpoints"))
    encoder = [keras.ops.convert_to_numpy(w) for w in load_encoder(workdir).weights]
    expected = [keras.ops.convert_to_numpy(w) for w in load_encoder(reference).weights]
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(encoder, expected)) <= TOLERANCE
