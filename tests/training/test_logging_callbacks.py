"""The run's loggers: TensorBoard scalars (Keras's callback) and mask pictures."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.training import (
    TensorBoardMaskPictures,
    TensorBoardScalars,
    fit_resumable,
    warmup_cosine,
)
from keras_ccmim.pictures import LABEL_HEIGHT
from tests.testing_utils import CrashAtStep, read_events


def _dense_model():
    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.AdamW(warmup_cosine(0.05, 2, 8)), loss="mse")
    return model


def _constant_batches():
    rng = np.random.RandomState(0)
    x = rng.randn(8, 3).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]], "float32")).astype("float32")
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def test_tensorboard_scalars_are_keras_tensorboard_events(tmp_path):
    callback = TensorBoardScalars(str(tmp_path), update_freq=2)
    assert isinstance(callback, keras.callbacks.TensorBoard)
    _dense_model().fit(
        _constant_batches(), epochs=2, steps_per_epoch=3, verbose=0, callbacks=[callback],
    )
    scalars, plugins = read_events(tmp_path / "train")
    assert {plugins[tag] for tag in scalars} == {"scalars"}
    assert [step for step, _ in scalars["epoch_loss"]] == [0, 1]
    assert [step for step, _ in scalars["batch_loss"]] == [2, 4, 6]
    assert [step for step, _ in scalars["epoch_learning_rate"]] == [0, 1]
    assert all(np.isfinite(v) for _, v in scalars["epoch_loss"])
    # The batch scalar of step 6 is the epoch's running mean there: the
    # epoch's loss.
    assert scalars["batch_loss"][-1][1] == pytest.approx(scalars["epoch_loss"][-1][1])


def test_a_resumed_run_neither_loses_nor_repeats_a_logged_step(tmp_path):
    log_dir, checkpoint_dir = str(tmp_path / "tensorboard"), str(tmp_path / "ckpt")
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_resumable(
            _dense_model(), _constant_batches(), epochs=2, steps_per_epoch=4,
            checkpoint_dir=checkpoint_dir, save_every_steps=1, verbose=0,
            callbacks=[CrashAtStep(at_step=6), TensorBoardScalars(log_dir, update_freq=1)],
        )
    # Killed after step 6 trained but before its checkpoint (of step 5
    # lasts): its scalars, written before step 7, were not written either.
    scalars, _ = read_events(os.path.join(log_dir, "train"))
    assert [step for step, _ in scalars["batch_loss"]] == [1, 2, 3, 4, 5]
    _, initial_step = fit_resumable(
        _dense_model(), _constant_batches(), epochs=2, steps_per_epoch=4,
        checkpoint_dir=checkpoint_dir, save_every_steps=1, verbose=0,
        callbacks=[TensorBoardScalars(log_dir, update_freq=1)],
    )
    assert initial_step == 5
    scalars, _ = read_events(os.path.join(log_dir, "train"))
    assert [step for step, _ in scalars["batch_loss"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [step for step, _ in scalars["epoch_loss"]] == [0, 1]


class MaskOnlyModel(keras.Model):
    def call(self, images, training=None):
        mask = keras.ops.convert_to_tensor(np.array([[1, 0, 0, 1], [0, 1, 1, 0]], "float32"))
        return {"mask": mask}


def test_mask_pictures_are_an_image_of_each_epoch(tmp_path):
    images = np.zeros((2, 4, 4, 3), "float32")
    pictures = TensorBoardMaskPictures(str(tmp_path), images, patch_size=2, max_images=2)
    pictures.set_model(MaskOnlyModel())
    pictures.on_train_begin()
    for epoch in (3, 4):
        pictures.on_epoch_end(epoch)
    pictures.on_train_end()
    values, plugins = read_events(tmp_path / "train")
    assert plugins["masks"] == "images"
    assert [step for step, _ in values["masks"]] == [3, 4]
    picture = values["masks"][0][1]
    # One row per image, two labelled columns (image, masked input): 4 px
    # images scaled 24x to 96 px, 2 px gaps, the labels on top.
    assert picture.shape == (LABEL_HEIGHT + 2 * 98 + 2, 2 * 98 + 2, 3)
    assert (picture[:LABEL_HEIGHT, 2:98] < 128).any()  # a label
    # Image 0's patch 0 is masked (grey in the second column), its patch 1
    # is not (as in the first column).
    row = picture[LABEL_HEIGHT + 2 : LABEL_HEIGHT + 2 + 48]
    image_cell, masked_cell = row[:, 2:98], row[:, 100:196]
    assert (masked_cell[:, :48] == 128).all()
    np.testing.assert_array_equal(masked_cell[:, 48:], image_cell[:, 48:])
    assert not (image_cell[:, :48] == 128).all()


class PerfectReconstructionModel(MaskOnlyModel):
    norm_pix_loss = False

    def call(self, images, training=None):
        from keras_ccmim.layers.patching import patchify

        outputs = super().call(images)
        outputs["pred"] = patchify(images, 2)  # the masked patches, exactly
        return outputs


def test_mask_pictures_show_the_reconstruction(tmp_path):
    images = np.random.RandomState(0).randn(2, 4, 4, 3).astype("float32")
    pictures = TensorBoardMaskPictures(str(tmp_path), images, patch_size=2, max_images=2)
    pictures.set_model(PerfectReconstructionModel())
    pictures.on_train_begin()
    pictures.on_epoch_end(0)
    pictures.on_train_end()
    values, _ = read_events(tmp_path / "train")
    picture = values["masks"][0][1]
    # Three columns: image, masked input, reconstruction (here the image itself).
    assert picture.shape[1] == 3 * 98 + 2
    cells = picture[LABEL_HEIGHT + 2 :]
    np.testing.assert_array_equal(cells[:, 198:294], cells[:, 2:98])
