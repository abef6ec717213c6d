import keras
import numpy as np
import pytest

from keras_ccmim.training import is_decayed, make_optimizer, scaled_learning_rate


def test_scaled_learning_rate():
    assert scaled_learning_rate(1.5e-4, 4096) == pytest.approx(2.4e-3)
    assert scaled_learning_rate(1e-3, 256) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="global_batch_size"):
        scaled_learning_rate(1e-3, 0)


def test_decay_rule_covers_biases_norms_tokens_and_positions(tiny_pretrainer):
    model = tiny_pretrainer()
    model.build()
    decayed = {v.path for v in model.trainable_variables if is_decayed(v)}
    kept = {v.path for v in model.trainable_variables if not is_decayed(v)}
    assert any(p.endswith("encoder/cls_token") for p in kept)
    assert any(p.endswith("decoder/mask_token") for p in kept)
    assert any("bias" in p for p in kept)
    assert any("norm" in p and ("gamma" in p or "beta" in p) for p in kept)
    assert all("kernel" in p for p in decayed), decayed
    assert any("qkv/kernel" in p for p in decayed)
    # The sin-cos position embeddings are fixed: not trained, so not decayed.
    positions = [v for v in model.variables if "position_embedding" in v.path]
    assert positions and not any(v.trainable for v in positions)
    assert all(not is_decayed(v) for v in positions)


def test_only_decayed_variables_shrink_under_zero_gradients(tiny_pretrainer):
    model = tiny_pretrainer()
    optimizer = make_optimizer(model, learning_rate=1.0, weight_decay=0.5)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.95
    variables = model.trainable_variables
    for v in variables:  # make every variable non-zero
        v.assign(keras.ops.ones(v.shape, v.dtype))
    before = [keras.ops.convert_to_numpy(v).copy() for v in variables]
    optimizer.apply_gradients(
        [(keras.ops.zeros(v.shape, v.dtype), v) for v in variables]
    )
    for v, old in zip(variables, before):
        new = keras.ops.convert_to_numpy(v)
        if is_decayed(v):
            np.testing.assert_allclose(new, old * 0.5, rtol=1e-6, err_msg=v.path)
        else:
            np.testing.assert_array_equal(new, old, err_msg=v.path)


def test_negative_weight_decay_is_rejected(tiny_pretrainer):
    with pytest.raises(ValueError, match="weight_decay"):
        make_optimizer(tiny_pretrainer(), 1e-3, weight_decay=-1.0)
