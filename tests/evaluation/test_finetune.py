"""Fine-tuning: layer-wise lr decay, the augmentation pipeline, a short run,
and a checkpointed run: killed and resumed, its classifier file, its best
epoch, and the refusal of a changed configuration."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.evaluation import (
    LayerDecayAdamW,
    ViTClassifier,
    finetune,
    layer_decay_scales,
    layer_ids,
)
from keras_ccmim.evaluation.finetune import CLASSIFIER_FILE, CONFIG_FILE, finetune_encoder
from keras_ccmim.evaluation.finetune_run import (
    HISTORY_FILE,
    RESULTS_FILE,
    EpochValidation,
    FinetuneConfigError,
)
from keras_ccmim.evaluation.finetune_data import (
    PositionedRandAugment,
    make_finetune_dataset,
    mix_batch,
)
from tests.evaluation.conftest import TINY_ENCODER
from tests.testing_utils import to_numpy

pytestmark = pytest.mark.slow  # minutes of fine-tuning runs: see the `slow` marker

# keras.layers.RandAugment in the tf.data pipeline traces a ~47k-op graph
# under JAX (30-60 s on 2 cores; see test_finetune_dataset_yields_soft_targets),
# so only the TensorFlow run includes it.
MAGNITUDE = 9 if keras.backend.backend() == "tensorflow" else 0
# 3 epochs of 3 steps of 8 images (24 training images: one pass per epoch),
# checkpoints every 2 steps and at epoch ends (2, 3, 4, 6, 8, 9); drop path,
# MixUp/CutMix, random erasing (and RandAugment on TF) all on, so a resume
# that restarted a random stream from the seed would show.
RUN = dict(
    dataset="synthetic_objects", train_num_images=24, eval_num_images=16, epochs=3,
    steps_per_epoch=3, warmup_epochs=1, batch_size=8, base_learning_rate=5e-2,
    rand_augment_magnitude=MAGNITUDE, checkpoint_every_steps=2, keep_checkpoints=20, seed=5,
)
# Float32 on CPU, every backend (measured 0.0 on TF, JAX and torch).
TOLERANCE = 1e-6


@pytest.fixture
def classifier(tiny_encoder):
    model = ViTClassifier(tiny_encoder, num_classes=4)
    model.build()
    return model


def test_layer_ids_and_scales(classifier):
    encoder = classifier.encoder
    ids = layer_ids(classifier)
    assert set(ids) == {v.path for v in classifier.trainable_variables}
    assert ids[encoder.cls_token.path] == 0
    assert all(ids[v.path] == 0 for v in encoder.patch_embedding.trainable_variables)
    assert all(ids[v.path] == 1 for v in encoder.blocks[0].trainable_variables)
    assert all(ids[v.path] == 2 for v in encoder.blocks[1].trainable_variables)
    assert all(ids[v.path] == 3 for v in classifier.head.trainable_variables)
    scales = layer_decay_scales(classifier, 0.5)
    assert scales[encoder.cls_token.path] == pytest.approx(0.125)
    assert scales[classifier.head.kernel.path] == 1.0
    with pytest.raises(ValueError, match="layer_decay"):
        layer_decay_scales(classifier, 1.5)


def test_optimizer_scales_each_variable_step(classifier):
    """Adam's first step moves every weight by lr * scale (|g| >> eps), and
    decoupled weight decay by lr * scale * wd * w on matrices only."""
    scales = layer_decay_scales(classifier, 0.5)
    variables = classifier.trainable_variables
    before = [to_numpy(v) for v in variables]
    lr, wd = 1e-3, 0.1
    optimizer = LayerDecayAdamW(lr, lr_scales=scales, weight_decay=wd)
    grads = [keras.ops.ones(v.shape) for v in variables]
    optimizer.apply(grads, variables)
    for v, old in zip(variables, before):
        scale = scales[v.path]
        decayed = len(v.shape) > 1 and "cls_token" not in v.path
        want = old * (1 - lr * scale * wd * decayed) - lr * scale
        np.testing.assert_allclose(to_numpy(v), want, rtol=1e-4, atol=1e-7, err_msg=v.path)


def test_optimizer_config_round_trip():
    optimizer = LayerDecayAdamW(1e-3, lr_scales={"a/b": 0.5}, weight_decay=0.02)
    clone = LayerDecayAdamW.from_config(optimizer.get_config())
    assert clone.lr_scales == {"a/b": 0.5} and clone.decoupled_weight_decay == 0.02


def test_classifier_and_drop_path_copy(tiny_encoder, classifier):
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    assert tuple(classifier(images).shape) == (2, 4)
    copy = finetune_encoder(tiny_encoder, 0.1)
    assert copy.drop_path_rate == 0.1 and copy is not tiny_encoder
    np.testing.assert_allclose(to_numpy(copy(images)), to_numpy(tiny_encoder(images)), atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        ViTClassifier(tiny_encoder, num_classes=1)


def test_mix_batch_mixes_images_and_targets_alike():
    images = tf.constant(np.arange(4, dtype="float32").reshape(4, 1, 1, 1) * np.ones((4, 8, 8, 3)))
    targets = tf.one_hot([0, 1, 2, 3], 4)
    for seed in range(4):
        mixed, soft = mix_batch(images, targets, tf.constant([seed, 0]), 0.8, 1.0)
        lam = soft.numpy()[0, 0]
        assert soft.numpy()[0, 3] == pytest.approx(1 - lam, abs=1e-6)
        # Image 0 is a mix of images 0 and 3 (value 0 and 3): its mean pixel is 3 * (1 - lam).
        assert mixed.numpy()[0].mean() == pytest.approx(3 * (1 - lam), abs=1e-5)
    unchanged, same = mix_batch(images, targets, tf.constant([0, 0]), 0.0, 0.0)
    assert unchanged is images and same is targets


def test_finetune_dataset_yields_soft_targets():
    # The pipeline is tf.data whatever the backend. keras.layers.RandAugment
    # in it traces a ~47k-op graph under JAX (30-60 s on 2 cores), so only
    # the TensorFlow run includes it; the first JAX and torch runs of the
    # suite passed with it too.
    magnitude = 9 if keras.backend.backend() == "tensorflow" else 0
    dataset = make_finetune_dataset(
        "synthetic_objects", split="train", batch_size=4, image_size=16, num_classes=10,
        num_images=16, rand_augment_magnitude=magnitude,
    )
    images, targets = next(iter(dataset))
    assert images.shape == (4, 16, 16, 3) and targets.shape == (4, 10)
    np.testing.assert_allclose(targets.numpy().sum(1), 1.0, atol=1e-5)
    assert targets.numpy().min() >= 0.01 - 1e-6  # label smoothing 0.1 over 10 classes
    with pytest.raises(ValueError, match="rand_augment_magnitude"):
        make_finetune_dataset("synthetic_objects", split="train", batch_size=4, image_size=16,
                              num_classes=10, rand_augment_magnitude=11)


def test_short_finetune_runs_and_reports(tiny_encoder):
    weights = [to_numpy(w) for w in tiny_encoder.weights]
    result = finetune(
        tiny_encoder, "synthetic_objects", train_num_images=32, eval_num_images=16,
        epochs=2, steps_per_epoch=2, warmup_epochs=1, batch_size=8,
        rand_augment_magnitude=0,  # see test_finetune_dataset_yields_soft_targets
    )
    assert 0 <= result.top1 <= result.top5 <= 100
    assert result.steps == 4 and np.isfinite(result.final_loss)
    assert tuple(result.model(np.zeros((1, 16, 16, 3), "float32")).shape) == (1, 10)
    for before, after in zip(weights, tiny_encoder.weights):  # the input is not trained
        np.testing.assert_array_equal(before, to_numpy(after))


def test_finetune_stream_is_positioned_by_batch():
    """Batches from `start_batch=3` on are batches 3, 4 of the stream from 0,
    and two builds of one stream agree (RandAugment included on TF)."""
    kwargs = dict(split="train", batch_size=4, image_size=16, num_classes=10, num_images=12,
                  seed=3, rand_augment_magnitude=MAGNITUDE)

    def batches(start, count):
        dataset = make_finetune_dataset("synthetic_objects", start_batch=start, **kwargs)
        return [(a.numpy(), b.numpy()) for a, b in dataset.take(count)]

    whole, tail, again = batches(0, 5), batches(3, 2), batches(0, 5)
    for (images, targets), (want_images, want_targets) in zip(tail, whole[3:]):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(targets, want_targets)
    for (images, _), (want, _) in zip(again, whole):
        np.testing.assert_array_equal(images, want)
    # Pass 2 (batches 3-5) is not pass 1 again: new order and augmentation.
    assert np.abs(whole[3][0] - whole[0][0]).max() > 0.1


def test_positioned_rand_augment_draws_from_the_given_seed():
    import tensorflow as tf

    # One op a call: the mechanism is the same, and the graph (traced under
    # every backend) half the size.
    layer = PositionedRandAugment(value_range=(0, 1), num_ops=1, factor=0.9, seed=0)
    image = tf.random.stateless_uniform([16, 16, 3], [1, 2])

    @tf.function
    def augment(seed):
        return layer.augment(image, seed)

    first = [augment(tf.constant([s, 7], tf.int64)).numpy() for s in range(6)]
    second = [augment(tf.constant([s, 7], tf.int64)).numpy() for s in range(6)]
    for a, b in zip(first, second):  # the same seed, the same image
        np.testing.assert_array_equal(a, b)
    # It augments, and different seeds draw different augmentations.
    assert max(np.abs(a - image.numpy()).max() for a in first) > 0.05
    assert len({a.tobytes() for a in first}) > 3
    with pytest.raises(RuntimeError, match="augment"):
        layer(image, training=True)


class Killed(Exception):
    """Stands for SIGKILL: raised from a callback, nothing after it runs."""


class KillAfterStep(keras.callbacks.Callback):
    """Dies once global step `step` has trained, before its checkpoint (if
    any): `finetune`'s callbacks run before `TrainingCheckpoint`."""

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


class RecordTop1(keras.callbacks.Callback):
    """An independent reference for the epoch validation: numpy top-1 of
    `model.predict` on the evaluation images, next to what the logs say."""

    def __init__(self, images, labels):
        super().__init__()
        self.images, self.labels = images, labels
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        logits = self.model.predict(self.images, batch_size=len(self.images), verbose=0)
        top1 = 100.0 * float(np.mean(np.argmax(logits, axis=-1) == self.labels))
        self.seen.append((epoch + 1, top1, logs["val_top1"]))


def _evaluation_arrays():
    from keras_ccmim.data import make_dataset

    dataset = make_dataset("synthetic_objects", split="test", batch_size=16, image_size=16,
                           training=False, num_images=16)
    images, extras = next(iter(dataset))
    return images.numpy(), extras["label"].numpy()


@pytest.fixture(scope="module")
def encoder():
    from keras_ccmim.evaluation import random_encoder

    return random_encoder(seed=0, **TINY_ENCODER)


@pytest.fixture(scope="module")
def reference(encoder, tmp_path_factory):
    """The uninterrupted checkpointed run, with the independent top-1."""
    record = RecordTop1(*_evaluation_arrays())
    output_dir = str(tmp_path_factory.mktemp("finetune") / "uninterrupted")
    result = finetune(encoder, **RUN, output_dir=output_dir, callbacks=[record])
    return result, record


def _max_difference(model, other):
    return max(
        float(np.max(np.abs(a - b))) for a, b in zip(model.get_weights(), other.get_weights())
    )


def test_a_killed_finetune_resumes_to_the_uninterrupted_classifier(
    encoder, reference, tmp_path, library_messages, capsys
):
    want, _ = reference
    output_dir = str(tmp_path / "run")
    # Killed mid-epoch 2 after step 5; the newest checkpoint is step 4
    # (epoch 2, batch 1 of 3), so the rerun starts inside an epoch.
    with pytest.raises(Killed):
        finetune(encoder, **RUN, output_dir=output_dir, callbacks=[KillAfterStep(5)])
    assert not os.path.exists(os.path.join(output_dir, CLASSIFIER_FILE))
    library_messages.read()
    got = finetune(encoder, **RUN, output_dir=output_dir)
    out = library_messages.read()
    assert "at step 4 (epoch 2, batch 1 of 3)" in out
    assert got.initial_step == 4 and got.global_step == want.global_step == 9
    difference = _max_difference(got.model, want.model)
    with capsys.disabled():
        print(f"\n[{keras.backend.backend()}] killed after step 5, resumed at 4: "
              f"max |classifier weight difference| {difference:.3g}")
    assert difference <= TOLERANCE
    # The history is the whole run's, one record per epoch, as the
    # uninterrupted run's (epoch 2's loss averages only the resumed steps).
    assert got.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(got.history["val_top1"], want.history["val_top1"], atol=1e-9)
    assert (got.top1, got.best_epoch) == (want.top1, want.best_epoch)
    # A rerun of the finished run restores it and only rewrites the outputs.
    again = finetune(encoder, **RUN, output_dir=output_dir)
    assert "training already finished" in library_messages.read()
    assert again.initial_step == 9 and _max_difference(again.model, want.model) == 0.0
    assert again.history == got.history


def test_the_classifier_file_loads_and_predicts_the_same(reference):
    result, _ = reference
    path = os.path.join(result.output_dir, CLASSIFIER_FILE)
    assert result.paths["classifier"] == path
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, ViTClassifier)
    images, _ = _evaluation_arrays()
    np.testing.assert_allclose(
        to_numpy(loaded.predict_on_batch(images)), to_numpy(result.model.predict_on_batch(images)),
        atol=1e-6,
    )
    assert _max_difference(loaded, result.model) == 0.0
    assert sorted(os.listdir(result.output_dir)) == sorted(
        [CLASSIFIER_FILE, CONFIG_FILE, HISTORY_FILE, RESULTS_FILE, "checkpoints"])


def test_best_epoch_is_the_argmax_of_the_epoch_accuracies(reference):
    result, record = reference
    history = result.history
    assert history["epoch"] == [1, 2, 3] and len(history["val_top1"]) == 3
    # Each epoch's val_top1 is numpy's top-1 of model.predict at that epoch end.
    assert [epoch for epoch, _, _ in record.seen] == [1, 2, 3]
    for epoch, top1, logged in record.seen:
        assert logged == pytest.approx(top1, abs=1e-9), epoch
    top1 = [top1 for _, top1, _ in record.seen]
    index = int(np.argmax(top1))
    assert result.best_epoch == index + 1
    assert result.best_top1 == pytest.approx(top1[index], abs=1e-9)
    assert result.best_top5 == history["val_top5"][index]
    # The final evaluation is the last epoch's.
    assert result.top1 == pytest.approx(top1[-1], abs=1e-9)
    # The results file and the printed summary say the same.
    with open(result.paths["results"]) as f:
        saved = json.load(f)
    assert saved["best_epoch"] == result.best_epoch and saved["history"] == history
    assert saved["top1"] == result.top1


def test_epoch_validation_adds_no_per_step_callback():
    """Keras syncs host and device each step for callbacks that override
    the batch hooks; the epoch validation overrides none of them."""
    for hook in ("on_train_batch_begin", "on_train_batch_end", "on_batch_end"):
        assert getattr(EpochValidation, hook) is getattr(keras.callbacks.Callback, hook)


def test_a_changed_configuration_is_refused_then_fresh_starts_over(
    encoder, tmp_path, caplog, library_messages
):
    small = dict(RUN, epochs=2, steps_per_epoch=1, warmup_epochs=0, checkpoint_every_steps=0)
    output_dir = str(tmp_path / "run")
    first = finetune(encoder, **small, output_dir=output_dir)
    with pytest.raises(FinetuneConfigError) as error:
        finetune(encoder, **dict(small, epochs=3, base_learning_rate=1e-3),
                 output_dir=output_dir)
    message = str(error.value)
    assert "epochs: 2 -> 3" in message and "base_learning_rate: 0.05 -> 0.001" in message
    assert "--fresh" in message and "--output_dir" in message
    # Another encoder (the same architecture) is another run too.
    other = finetune_encoder(encoder, 0.0)
    other.set_weights([w + 1.0 for w in other.get_weights()])
    with pytest.raises(FinetuneConfigError, match="encoder_weights"):
        finetune(other, **small, output_dir=output_dir)
    # Changing how often the host looks is allowed: it resumes (finished).
    finetune(encoder, **dict(small, check_every_steps=5), output_dir=output_dir)
    assert "training already finished" in library_messages.read()
    # fresh moves the earlier run aside, deleting nothing, and starts over.
    before = sorted(os.listdir(output_dir))
    with caplog.at_level(logging.INFO, logger="keras_ccmim.evaluation"):
        fresh = finetune(encoder, **dict(small, epochs=3), output_dir=output_dir, fresh=True)
    assert fresh.initial_step == 0 and fresh.global_step == 3
    # The library logs where the earlier run went, and the run's summary.
    assert ("Starting afresh (fresh=True): the earlier run's outputs are kept in "
            f"{os.path.join(output_dir, 'previous-1')}.") in caplog.text
    assert f"Fine-tuned for 3 steps: final top-1 {fresh.top1:.2f}" in caplog.text
    assert sorted(os.listdir(os.path.join(output_dir, "previous-1"))) == before
    with open(os.path.join(output_dir, "previous-1", RESULTS_FILE)) as f:
        assert json.load(f)["global_step"] == first.global_step == 2
