import numpy as np
import pytest

from keras_ccmim.layers import DropPath, LayerScale, TransformerBlock
from tests.layers.numpy_reference import block_weights, layer_norm, reference_block
from tests.testing_utils import assert_config_round_trip, serialization_round_trip, to_numpy


@pytest.fixture
def block_and_input():
    block = TransformerBlock(16, 4, mlp_ratio=2.0)
    x = np.random.RandomState(3).randn(2, 7, 16).astype("float32")
    block(x)
    return block, x


def test_block_matches_numpy_reference(block_and_input):
    block, x = block_and_input
    expected, _ = reference_block(x.astype("float64"), block_weights(block), 4)
    np.testing.assert_allclose(to_numpy(block(x)), expected, rtol=1e-4, atol=1e-4)


def test_cls_attention_equals_direct_computation(block_and_input):
    block, x = block_and_input
    _, attn = reference_block(x.astype("float64"), block_weights(block), 4)
    expected = attn[:, :, 0, 1:].mean(axis=1)  # [CLS] query, patch keys, head mean
    out, cls_attention = block(x, return_cls_attention=True)
    np.testing.assert_allclose(to_numpy(cls_attention), expected, rtol=1e-5, atol=1e-6)
    only = block(x, cls_attention_only=True)
    np.testing.assert_allclose(to_numpy(only), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(to_numpy(out), to_numpy(block(x)), rtol=1e-6, atol=1e-6)


def test_heads_must_divide_width():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TransformerBlock(10, 3)


def test_layer_scale_starts_at_its_init_value(block_and_input):
    _, x = block_and_input
    block = TransformerBlock(16, 4, layer_scale_init_value=0.0)
    # With zero LayerScale both branches vanish: the block is the identity.
    np.testing.assert_allclose(to_numpy(block(x)), x, atol=1e-6)
    assert_config_round_trip(LayerScale(0.5), {"init_value": 0.5})


def test_drop_path_identity_at_inference_and_per_sample_in_training():
    x = np.ones((4000, 3), "float32")
    layer = DropPath(0.25, seed=5)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    y = to_numpy(layer(x, training=True))
    # Each row is either all zero or all 1/(1-rate).
    assert np.all(np.isclose(y, 0.0) | np.isclose(y, 1 / 0.75))
    assert np.all(y.min(axis=1) == y.max(axis=1))
    assert abs((y[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05
    with pytest.raises(ValueError, match="DropPath rate"):
        DropPath(1.0)


def test_block_config_round_trip():
    args = dict(
        hidden_dim=16, num_heads=4, mlp_ratio=2.0, qkv_bias=False, drop_path_rate=0.1,
        layer_scale_init_value=1e-4, layer_norm_epsilon=1e-5, seed=3,
    )
    block = TransformerBlock(**args)
    assert_config_round_trip(block, args)
    assert serialization_round_trip(block).get_config() == block.get_config()
    assert_config_round_trip(DropPath(0.2, seed=1), {"rate": 0.2, "seed": 1})


@pytest.mark.parametrize("scale", ["head_dim", "hidden_dim"])
def test_cls_attention_logits_equal_direct_computation(block_and_input, scale):
    block, x = block_and_input
    p = block_weights(block)
    heads, dh = 4, 4
    b, t, d = x.shape
    qkv = layer_norm(x.astype("float64"), p["g1"], p["b1"], 1e-6) @ p["wqkv"] + p["bqkv"]
    qkv = qkv.reshape(b, t, 3, heads, dh)
    q0, keys = qkv[:, 0, 0], qkv[:, 1:, 1]  # [B, H, Dh], [B, N, H, Dh]
    # q_0 . k_j / sqrt(Dh) (the attention's scale) or / sqrt(D) (the paper's).
    width = {"head_dim": dh, "hidden_dim": d}[scale]
    expected = np.einsum("bhd,bnhd->bhn", q0, keys).mean(axis=1) / np.sqrt(width)
    options = dict(cls_attention_kind="logits", cls_attention_scale=scale)
    _, logits = block(x, return_cls_attention=True, **options)
    np.testing.assert_allclose(to_numpy(logits), expected, rtol=1e-4, atol=1e-5)
    only = block(x, cls_attention_only=True, **options)
    np.testing.assert_allclose(to_numpy(only), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="'probabilities' or 'logits'"):
        block(x, cls_attention_only=True, cls_attention_kind="weights")
    with pytest.raises(ValueError, match="head_dim, hidden_dim"):
        block(x, cls_attention_only=True, cls_attention_kind="logits", cls_attention_scale="d")
