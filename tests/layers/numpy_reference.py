"""The transformer block in numpy, float64: the independent reference that the
block, the encoder's [CLS] attention and the importance scorer are checked
against."""

import numpy as np

from tests.testing_utils import to_numpy


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def gelu(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def block_weights(block):
    w = lambda v: to_numpy(v).astype("float64")  # noqa: E731
    return {
        "g1": w(block.norm1.gamma), "b1": w(block.norm1.beta),
        "wqkv": w(block.qkv.kernel), "bqkv": w(block.qkv.bias),
        "wo": w(block.proj.kernel), "bo": w(block.proj.bias),
        "g2": w(block.norm2.gamma), "b2": w(block.norm2.beta),
        "w1": w(block.fc1.kernel), "c1": w(block.fc1.bias),
        "w2": w(block.fc2.kernel), "c2": w(block.fc2.bias),
    }


def reference_block(x, p, heads, eps=1e-6):
    """The block in numpy: returns output and the full attention [B, H, T, T]."""
    b, t, d = x.shape
    dh = d // heads
    qkv = layer_norm(x, p["g1"], p["b1"], eps) @ p["wqkv"] + p["bqkv"]
    qkv = qkv.reshape(b, t, 3, heads, dh)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [B, H, T, Dh]
    attn = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh))
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    x = x + out @ p["wo"] + p["bo"]
    h = gelu(layer_norm(x, p["g2"], p["b2"], eps) @ p["w1"] + p["c1"])
    return x + h @ p["w2"] + p["c2"], attn
