import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.training import (
    CheckpointError,
    ForegroundLift,
    NonFiniteLossError,
    TensorBoardScalars,
    TrainingCheckpoint,
    warmup_cosine,
    fit_resumable,
    foreground_patches,
    latest_checkpoint,
    predict_outputs,
    roll_back_to_step,
    seeded_predict_outputs,
)
from tests.testing_utils import CrashAtStep

STEPS_PER_EPOCH = 4


def _dense_model():
    """A compiled two-layer regression model: compiles in about a second."""
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.AdamW(warmup_cosine(0.05, 2, 2 * STEPS_PER_EPOCH)),
        loss="mse",
    )
    return model


def _constant_batches():
    """The same batch forever, so an interrupted run and an uninterrupted one
    see identical data and must end with identical states."""
    rng = np.random.RandomState(0)
    x = rng.randn(8, 3).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


class _InjectNaN(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.step = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.at_step:
            kernel = self.model.layers[0].kernel
            kernel.assign(keras.ops.full(kernel.shape, float("nan")))


def _state(model):
    return [keras.ops.convert_to_numpy(v) for v in model.weights + model.optimizer.variables]


def test_resume_mid_epoch_reproduces_an_uninterrupted_run(tmp_path):
    reference = _dense_model()
    fit_resumable(
        reference,
        _constant_batches(),
        epochs=2,
        steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=str(tmp_path / "reference"),
        verbose=0,
    )

    checkpoint_dir = str(tmp_path / "interrupted")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_resumable(
            _dense_model(),
            _constant_batches(),
            epochs=2,
            steps_per_epoch=STEPS_PER_EPOCH,
            checkpoint_dir=checkpoint_dir,
            callbacks=[CrashAtStep(at_step=6)],
            save_every_steps=1,
            verbose=0,
        )
    record = latest_checkpoint(checkpoint_dir)
    # The crash callback runs before the checkpoint of step 6.
    assert (record["global_step"], record["epoch"], record["batch"]) == (5, 1, 1)
    assert np.isfinite(record["batch_loss"]) and record["loss"] > 0

    resumed = _dense_model()
    history, initial_step = fit_resumable(
        resumed,
        _constant_batches(),
        epochs=2,
        steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir,
        save_every_steps=1,
        verbose=0,
    )
    assert initial_step == 5
    assert len(history["loss"]) == 1  # the rest of epoch 2
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 8
    for got, want in zip(_state(resumed), _state(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    kept = sorted(n for n in os.listdir(checkpoint_dir) if n.endswith(".weights.h5"))
    assert kept == ["ckpt-00000007.weights.h5", "ckpt-00000008.weights.h5"]
    log = [json.loads(line) for line in open(os.path.join(checkpoint_dir, "checkpoints.jsonl"))]
    assert [r["global_step"] for r in log] == [1, 2, 3, 4, 5, 6, 7, 8]

    # A finished run is not trained again.
    again = _dense_model()
    history, initial_step = fit_resumable(
        again, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir, verbose=0,
    )
    assert history == {} and initial_step == 8


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, library_messages):
    checkpoint_dir = str(tmp_path / "ckpt")
    model = _dense_model()
    with pytest.raises(NonFiniteLossError) as error:
        fit_resumable(
            model,
            _constant_batches(),
            epochs=2,
            steps_per_epoch=STEPS_PER_EPOCH,
            checkpoint_dir=checkpoint_dir,
            # NaN weights after step 3; the loss of step 4 is NaN.
            callbacks=[_InjectNaN(at_step=3)],
            save_every_steps=1,
            verbose=0,
            check_every_steps=1,
        )
    message = str(error.value)
    assert "step 4" in message and "ckpt-00000002.weights.h5" in message
    assert "(step 2) is the newest one from before the loss blew up, and it is kept" in message
    assert "resume_from_step=2" in message
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 4
    record = latest_checkpoint(checkpoint_dir)
    assert record["global_step"] == 2
    assert "Not checkpointing step 3" in library_messages.read()

    restored = _dense_model()
    TrainingCheckpoint(checkpoint_dir, STEPS_PER_EPOCH).restore(restored)
    assert all(np.all(np.isfinite(w)) for w in _state(restored))


def test_the_loss_read_every_n_steps_still_stops_within_n_steps(tmp_path, library_messages):
    """With the loss read every 3 steps (and at epoch ends and checkpoints),
    a NaN at step 6 stops training before step 7 runs; the checkpoint of
    step 4, whose next steps include the NaN, is not vouched for."""
    checkpoint_dir = str(tmp_path / "ckpt")
    model = _dense_model()
    with pytest.raises(NonFiniteLossError) as error:
        fit_resumable(
            model, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
            checkpoint_dir=checkpoint_dir,
            callbacks=[_InjectNaN(at_step=5)],  # the loss of step 6 is NaN
            save_every_steps=2, verbose=0, check_every_steps=3,
        )
    message = str(error.value)
    assert "between steps 5 and 6 (the loss is read every 3 steps)" in message
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 6
    assert "ckpt-00000002.weights.h5 (step 2) is the newest one from before" in message
    assert "The newest, step 4, may already hold diverged weights" in message
    names = sorted(n for n in os.listdir(checkpoint_dir) if n.endswith(".h5"))
    assert names == ["ckpt-00000002.weights.h5", "ckpt-00000004.weights.h5"]


class _CountHostReads(keras.callbacks.Callback):
    """Records the global steps after which the run's callbacks read the
    loss (through the model's metrics), by wrapping `get_metrics_result`;
    the calls of the traced train step (symbolic values) are not reads."""

    def __init__(self):
        super().__init__()
        self.reads = []

    def on_train_begin(self, logs=None):
        model, reads = self.model, self.reads
        original = model.get_metrics_result

        def counted():
            result = original()
            caller = sys._getframe(1).f_code.co_filename
            if "keras_ccmim" in caller:  # not Keras' own epoch-end or traced calls
                reads.append(int(keras.ops.convert_to_numpy(model.optimizer.iterations)))
            return result

        model.get_metrics_result = counted


def test_the_run_callbacks_read_the_loss_only_every_n_steps(tmp_path):
    counter = _CountHostReads()
    fit_resumable(
        _dense_model(), _constant_batches(), epochs=3, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=str(tmp_path / "ckpt"), callbacks=[counter,
                                                         TensorBoardScalars(str(tmp_path), 6)],
        save_every_steps=0, verbose=0, check_every_steps=5,
    )
    # Steps 5 and 10 (check_every_steps) and 6 (TensorBoard); epoch ends
    # read the epoch logs Keras hands over. No callback overrides
    # on_train_batch_end, so Keras need not sync on the other steps.
    assert sorted(set(counter.reads)) == [5, 6, 10]
    from keras_ccmim.training import StopOnNonFiniteLoss, TrainingCheckpoint as Checkpoint
    for callback in (StopOnNonFiniteLoss(), Checkpoint(str(tmp_path), 4),
                     TensorBoardScalars(str(tmp_path), 6)):
        assert type(callback).on_train_batch_end is keras.callbacks.Callback.on_train_batch_end


class _Diverge(keras.callbacks.Callback):
    """Scales the weights by 1e3 after step `at_step` (finite, but the loss
    explodes) and makes them NaN after step `nan_step`: a blow-up that, as
    in real runs, is finite for a few steps before it is NaN."""

    def __init__(self, at_step, nan_step):
        super().__init__()
        self.at_step, self.nan_step, self.step = at_step, nan_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        kernel = self.model.layers[0].kernel
        if self.step == self.at_step:
            kernel.assign(kernel * 1e3)
        if self.step == self.nan_step:
            kernel.assign(keras.ops.full(kernel.shape, float("nan")))


def test_a_loss_that_blows_up_keeps_the_checkpoint_from_before_and_resumes_from_it(
    tmp_path, library_messages
):
    checkpoint_dir = str(tmp_path / "ckpt")
    model = _dense_model()
    with pytest.raises(NonFiniteLossError) as error:
        fit_resumable(
            model, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
            checkpoint_dir=checkpoint_dir, callbacks=[_Diverge(at_step=3, nan_step=5)],
            save_every_steps=1, max_to_keep=1, verbose=0, check_every_steps=1,
        )
    message = str(error.value)
    # ckpt-3 holds the scaled weights (step 4's loss exploded); ckpt-2 is the
    # newest healthy one and survived max_to_keep=1; ckpt-4 is the newest.
    assert "at step 6" in message
    assert "ckpt-00000002.weights.h5 (step 2) is the newest one from before" in message
    assert "The newest, step 4, may already hold diverged weights" in message
    assert "resume_from_step=2" in message
    names = sorted(n for n in os.listdir(checkpoint_dir) if n.endswith(".h5"))
    assert names == ["ckpt-00000002.weights.h5", "ckpt-00000004.weights.h5"]

    # Training on from step 2 ends where a run that never diverged ends.
    reference = _dense_model()
    fit_resumable(
        reference, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=str(tmp_path / "reference"), verbose=0,
    )
    resumed = _dense_model()
    library_messages.read()
    _, initial_step = fit_resumable(
        resumed, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir, save_every_steps=1, max_to_keep=1, verbose=0,
        resume_from_step=2,
    )
    assert initial_step == 2
    out = library_messages.read()
    assert "Rolled back to the checkpoint of step 2" in out
    for got, want in zip(_state(resumed), _state(reference)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The abandoned checkpoint is moved aside, not deleted.
    aside = os.path.join(checkpoint_dir, "abandoned-after-step-2")
    assert os.listdir(aside) == ["ckpt-00000004.weights.h5"]

    # The same command again resumes the continued run, not step 2.
    again = _dense_model()
    _, initial_step = fit_resumable(
        again, _constant_batches(), epochs=2, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir, verbose=0, resume_from_step=2,
    )
    assert initial_step == 2 * STEPS_PER_EPOCH
    assert "already rolled back to step 2" in library_messages.read()
    assert os.listdir(aside) == ["ckpt-00000004.weights.h5"]


def test_resume_from_a_step_without_checkpoint_names_the_kept_steps(tmp_path):
    checkpoint_dir = str(tmp_path / "ckpt")
    fit_resumable(
        _dense_model(), _constant_batches(), epochs=1, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir, save_every_steps=1, max_to_keep=2, verbose=0,
    )
    with pytest.raises(CheckpointError, match=r"No checkpoint of step 1 .* steps \[3, 4\]"):
        roll_back_to_step(checkpoint_dir, 1)


def test_checkpoint_refuses_an_inconsistent_pointer(tmp_path):
    checkpoint_dir = str(tmp_path / "ckpt")
    fit_resumable(
        _dense_model(), _constant_batches(), epochs=1, steps_per_epoch=2,
        checkpoint_dir=checkpoint_dir, verbose=0,
    )
    pointer = os.path.join(checkpoint_dir, "checkpoint.json")
    record = json.load(open(pointer))
    record["global_step"] = 99
    json.dump(record, open(pointer, "w"))
    with pytest.raises(ValueError, match="inconsistent"):
        TrainingCheckpoint(checkpoint_dir, 2).restore(_dense_model())


def test_checkpoint_arguments_are_checked():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        TrainingCheckpoint("x", 0)
    with pytest.raises(ValueError, match="max_to_keep"):
        TrainingCheckpoint("x", 2, max_to_keep=0)


def test_foreground_patches_threshold_is_half_a_patch():
    foreground = np.zeros((1, 4, 4), "float32")
    foreground[0, :2, :2] = 1.0  # patch 0: all foreground
    foreground[0, 0, 2:4] = 1.0  # patch 1: half
    foreground[0, 2, 0] = 1.0  # patch 2: a quarter
    np.testing.assert_array_equal(foreground_patches(foreground, 2), [[1, 1, 0, 0]])


class FixedMaskModel(keras.Model):
    def __init__(self, mask):
        super().__init__()
        self.fixed_mask = mask

    def call(self, images, training=None):
        return {"mask": keras.ops.convert_to_tensor(self.fixed_mask)}


def test_foreground_lift_enters_the_epoch_logs():
    foreground = np.zeros((2, 4, 4), "float32")
    foreground[:, :2, :2] = 1.0  # 1 of 4 patches is foreground
    lift = ForegroundLift(np.zeros((2, 4, 4, 3), "float32"), foreground, patch_size=2)
    lift.set_model(FixedMaskModel(np.array([[1, 1, 0, 0], [1, 0, 0, 0]], "float32")))
    logs = {"loss": 1.0}
    lift.on_epoch_end(0, logs)
    # Masked patches: 3, of which 2 foreground; all patches: 1/4 foreground.
    assert logs["foreground_lift"] == pytest.approx((2 / 3) / (1 / 4))
    # Foreground first would mask min(2, 1) + min(1, 1) = 2 of the 3: the same.
    assert logs["foreground_lift_max"] == pytest.approx((2 / 3) / (1 / 4))
    assert logs["mask_selectivity"] == pytest.approx(1.0)
    assert "score_selectivity" not in logs  # the model gives no scores


class FixedScoresModel(FixedMaskModel):
    def call(self, images, training=None):
        outputs = super().call(images)
        # Patch 3 (background) scores highest: the scores' top-1 misses the object.
        outputs["scores"] = keras.ops.convert_to_tensor(
            np.array([[0.1, 0.2, 0.3, 0.4]] * 2, "float32"))
        return outputs


def test_score_selectivity_is_the_top_k_of_the_scores():
    foreground = np.zeros((2, 4, 4), "float32")
    foreground[:, :2, :2] = 1.0  # patch 0 is foreground
    lift = ForegroundLift(np.zeros((2, 4, 4, 3), "float32"), foreground, patch_size=2)
    lift.set_model(FixedScoresModel(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], "float32")))
    logs = {}
    lift.on_epoch_end(0, logs)
    # Sampled: 1 of 2 masked patches foreground, lift 2, ceiling 4: 1/3.
    assert logs["mask_selectivity"] == pytest.approx(1 / 3)
    # Top-1 of the scores is patch 3 in both images: lift 0, selectivity -1/3.
    assert logs["score_selectivity"] == pytest.approx(-1 / 3)


def _checkpointed_run(checkpoint_dir):
    """4 steps checkpointed at each: ckpt 3 and 4 kept, the pointer names 4."""
    fit_resumable(
        _dense_model(), _constant_batches(), epochs=1, steps_per_epoch=STEPS_PER_EPOCH,
        checkpoint_dir=checkpoint_dir, save_every_steps=1, verbose=0,
    )


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage, step, source", [
    (("delete pointer",), 4, "checkpoints.jsonl"),
    (("truncate pointer",), 4, "checkpoints.jsonl"),
    (("delete pointer", "delete log"), 4, "the checkpoint files"),
    (("truncate newest",), 3, "checkpoints.jsonl"),
    (("truncate pointer", "truncate log", "truncate newest"), 3, "the checkpoint files"),
])
def test_restore_falls_back_to_the_newest_intact_checkpoint(tmp_path, library_messages, damage, step,
                                                            source):
    checkpoint_dir = str(tmp_path / "ckpt")
    _checkpointed_run(checkpoint_dir)
    files = {
        "pointer": os.path.join(checkpoint_dir, "checkpoint.json"),
        "log": os.path.join(checkpoint_dir, "checkpoints.jsonl"),
        "newest": os.path.join(checkpoint_dir, "ckpt-00000004.weights.h5"),
    }
    for action in damage:
        verb, name = action.split()
        os.remove(files[name]) if verb == "delete" else _truncate(files[name])
    before = sorted(os.listdir(checkpoint_dir))
    library_messages.read()

    model = _dense_model()
    checkpoint = TrainingCheckpoint(checkpoint_dir, STEPS_PER_EPOCH)
    assert checkpoint.restore(model) == step
    out = library_messages.read()
    assert f"Restored checkpoint {checkpoint_dir}/ckpt-{step:08d}.weights.h5" in out
    assert f"found through {source}" in out
    if "truncate newest" in damage:
        assert "ckpt-00000004.weights.h5 cannot be loaded" in out
    assert checkpoint.restored["global_step"] == step
    assert all(np.all(np.isfinite(w)) for w in _state(model))
    assert sorted(os.listdir(checkpoint_dir)) == before  # nothing deleted


def test_restore_without_an_intact_checkpoint_is_a_clear_error(tmp_path):
    checkpoint_dir = str(tmp_path / "ckpt")
    _checkpointed_run(checkpoint_dir)
    for name in ("ckpt-00000003.weights.h5", "ckpt-00000004.weights.h5"):
        _truncate(os.path.join(checkpoint_dir, name))
    before = sorted(os.listdir(checkpoint_dir))
    with pytest.raises(CheckpointError, match="No intact checkpoint is left") as error:
        TrainingCheckpoint(checkpoint_dir, STEPS_PER_EPOCH).restore(_dense_model())
    assert isinstance(error.value, ValueError) and "--fresh" in str(error.value)
    assert "ckpt-00000003.weights.h5" in str(error.value)
    assert sorted(os.listdir(checkpoint_dir)) == before

    # Records left without any weights file are no checkpoint either.
    for name in before:
        if name.endswith(".h5"):
            os.remove(os.path.join(checkpoint_dir, name))
    with pytest.raises(CheckpointError, match="No intact checkpoint is left"):
        TrainingCheckpoint(checkpoint_dir, STEPS_PER_EPOCH).restore(_dense_model())
    assert latest_checkpoint(checkpoint_dir) is None


def _seed_states(model):
    return [keras.ops.convert_to_numpy(v).tolist() for v in model.variables
            if v.path.endswith("seed_generator_state")]


def test_the_foreground_measurement_is_seeded_and_leaves_training_draws_alone(
        tiny_pretrainer):
    model = tiny_pretrainer(masking="importance_sampling")
    model.build()
    images = np.random.RandomState(0).rand(4, 16, 16, 3).astype("float32")
    foreground = np.zeros((4, 16, 16), "float32")
    foreground[:, :8, :8] = 1.0
    lift = ForegroundLift(images, foreground, patch_size=4, seed=3)

    states = _seed_states(model)
    first = lift.compute(model)
    assert _seed_states(model) == states  # the training's draws are untouched
    predict_outputs(model, images)  # the model's own draws move on ...
    assert _seed_states(model) != states
    assert lift.compute(model) == first  # ... the measurement does not
    masks = [seeded_predict_outputs(model, images, seed=3)["mask"] for _ in range(2)]
    np.testing.assert_array_equal(masks[0], masks[1])
    assert masks[0].sum() > 0
    # Unseeded draws differ from one call to the next: the seeding is what
    # makes the figures repeatable.
    assert not np.array_equal(predict_outputs(model, images)["mask"],
                              predict_outputs(model, images)["mask"])


def test_seed_states_go_back_to_the_layers_that_drew_them(tiny_pretrainer):
    """A checkpoint's random states are put back by the layer that owns
    them, not by their position: a version of the model that creates its
    SeedGenerators in another order (as one did between two commits: the
    selector's and the encoder's were swapped) must resume the same draws.
    A checkpoint of other layers is refused."""
    from keras_ccmim.training.checkpoints import _restore_seed_states
    from keras_ccmim.training.exact_resume import seed_state_owners, seed_states

    written = tiny_pretrainer(masking="importance_sampling")
    written.build()
    owners = seed_state_owners(written)
    assert "selector" in owners and any(o.endswith("drop_path") for o in owners)
    assert len(set(owners)) == len(owners)
    for index, variable in enumerate(seed_states(written)):
        variable.assign(keras.ops.convert_to_tensor(np.array([index, 100 + index]),
                                                    dtype=variable.dtype))
    want = dict(zip(owners, _seed_states(written)))
    # The record as another creation order writes it: states and owners reversed.
    record = {"weights": "ckpt-00000001.weights.h5",
              "seed_states": _seed_states(written)[::-1], "seed_state_owners": owners[::-1]}

    restored = tiny_pretrainer(masking="importance_sampling")
    restored.build()
    _restore_seed_states(restored, record)
    assert dict(zip(seed_state_owners(restored), _seed_states(restored))) == want

    record["seed_state_owners"] = ["encoder/blocks/9/drop_path"] + owners[::-1][1:]
    with pytest.raises(CheckpointError, match="other layers than this model's"):
        _restore_seed_states(restored, record)
