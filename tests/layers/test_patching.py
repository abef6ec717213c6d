import numpy as np
import pytest
from keras import ops

from keras_ccmim.layers import PatchEmbedding, patchify, unpatchify
from tests.testing_utils import assert_config_round_trip, serialization_round_trip, to_numpy


def numpy_patchify(images, p):
    b, h, w, c = images.shape
    out = np.zeros((b, (h // p) * (w // p), p * p * c), images.dtype)
    for i in range(h // p):
        for j in range(w // p):
            out[:, i * (w // p) + j] = images[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(b, -1)
    return out


@pytest.mark.parametrize("shape,p", [((2, 8, 12, 3), 4), ((1, 6, 6, 1), 2), ((3, 16, 16, 3), 16)])
def test_patchify_matches_numpy_and_unpatchify_inverts(shape, p):
    x = np.random.RandomState(0).randn(*shape).astype("float32")
    patches = patchify(ops.convert_to_tensor(x), p)
    np.testing.assert_array_equal(to_numpy(patches), numpy_patchify(x, p))
    back = unpatchify(patches, p, (shape[1] // p, shape[2] // p), shape[3])
    np.testing.assert_array_equal(to_numpy(back), x)


def test_patchify_rejects_indivisible_size():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        patchify(ops.ones((1, 10, 10, 3)), 4)


def test_patch_embedding_equals_strided_convolution():
    """Dense on patchify(x) is the same function as a p-strided p x p Conv2D."""
    x = np.random.RandomState(1).randn(2, 8, 8, 3).astype("float32")
    layer = PatchEmbedding(4, 5)
    out = to_numpy(layer(x))
    kernel = to_numpy(layer.projection.kernel).reshape(4, 4, 3, 5)
    bias = to_numpy(layer.projection.bias)
    expected = np.zeros((2, 2, 2, 5), "float32")
    for i in range(2):
        for j in range(2):
            window = x[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
            expected[:, i, j] = np.einsum("bhwc,hwcd->bd", window, kernel) + bias
    np.testing.assert_allclose(out, expected.reshape(2, 4, 5), rtol=1e-5, atol=1e-5)


def test_patch_embedding_config_round_trips():
    assert_config_round_trip(PatchEmbedding(4, 8), {"patch_size": 4, "hidden_dim": 8})
    layer = PatchEmbedding(2, 4)
    assert serialization_round_trip(layer).get_config() == layer.get_config()
