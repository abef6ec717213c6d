"""The step benchmark's yardstick (benchmarks/reference_mae.py) is a real MAE
step: three quarters of the patches masked per image, and its loss is the
normalised-pixel MSE over exactly those patches (numpy reference)."""

import keras
import numpy as np
from keras import ops

from benchmarks.reference_mae import ReferenceMAE, mae_flops_per_image


def _model():
    return ReferenceMAE(image_size=16, patch_size=4, hidden_dim=32, num_layers=1, num_heads=2,
                        decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2, seed=3)


def test_masks_three_quarters_and_the_loss_is_the_masked_normalised_mse():
    model = _model()
    images = np.random.RandomState(0).rand(3, 16, 16, 3).astype("float32")
    prediction, is_masked = model(images, training=True)
    prediction = ops.convert_to_numpy(prediction)
    is_masked = ops.convert_to_numpy(is_masked)
    assert prediction.shape == (3, 16, 48)
    np.testing.assert_array_equal(is_masked.sum(axis=1), [12, 12, 12])
    assert len({tuple(row) for row in is_masked}) > 1  # each image its own mask

    # Patches in raster order, each flattened (row, column, channel).
    target = images.reshape(3, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(3, 16, 48)
    target = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, keepdims=True) + 1e-6)
    expected = (((prediction - target) ** 2).mean(-1) * is_masked).sum() / is_masked.sum()
    loss = model.compute_loss(x=images, y_pred=(prediction, is_masked))
    np.testing.assert_allclose(float(ops.convert_to_numpy(loss)), expected, rtol=1e-5)


def test_trains_with_fit_and_counts_the_library_flops():
    model = _model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    images = np.random.RandomState(1).rand(8, 16, 16, 3).astype("float32")
    history = model.fit(images, batch_size=4, epochs=2, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # 3 x (embedding + 1 encoder block over [CLS] + 4 visible + 1 decoder
    # block over [CLS] + 16), the spec's per-block count 24 n D^2 + 4 n^2 D.
    block = lambda n, d: 24 * n * d**2 + 4 * n**2 * d  # noqa: E731
    assert mae_flops_per_image(model) == 3 * (2 * 16 * 48 * 32 + block(5, 32) + block(17, 16))
