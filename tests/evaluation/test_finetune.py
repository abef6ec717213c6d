"""Fine-tuning: layer-wise lr decay, the augmentation pipeline, a short run."""

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
from keras_ccmim.evaluation.finetune import finetune_encoder
from keras_ccmim.evaluation.finetune_data import make_finetune_dataset, mix_batch
from tests.testing_utils import to_numpy


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
