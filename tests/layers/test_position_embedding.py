import math

import numpy as np
import pytest

from keras_ccmim.layers import SinCosPositionEmbedding, sincos_2d_position_embedding
from tests.testing_utils import assert_config_round_trip, to_numpy


def reference_embedding(rows, cols, dim):
    """MAE's formula written out element by element."""
    quarter = dim // 4
    table = np.zeros((rows * cols, dim))
    for r in range(rows):
        for c in range(cols):
            n = r * cols + c
            for k in range(quarter):
                freq = 1.0 / (10000.0 ** (k / quarter))
                table[n, k] = math.sin(c * freq)
                table[n, quarter + k] = math.cos(c * freq)
                table[n, 2 * quarter + k] = math.sin(r * freq)
                table[n, 3 * quarter + k] = math.cos(r * freq)
    return table


@pytest.mark.parametrize("rows,cols,dim", [(4, 4, 16), (3, 5, 8), (14, 14, 32)])
def test_sincos_matches_reference(rows, cols, dim):
    np.testing.assert_allclose(
        sincos_2d_position_embedding((rows, cols), dim), reference_embedding(rows, cols, dim), atol=1e-6
    )


def test_cls_row_is_zero():
    table = sincos_2d_position_embedding(3, 8, cls_token=True)
    assert table.shape == (10, 8)
    np.testing.assert_array_equal(table[0], 0.0)


def test_width_must_be_multiple_of_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d_position_embedding(4, 10)


def test_layer_adds_table_and_round_trips():
    layer = SinCosPositionEmbedding((2, 3))
    x = np.zeros((2, 6, 8), "float32")
    np.testing.assert_allclose(to_numpy(layer(x))[1], reference_embedding(2, 3, 8), atol=1e-6)
    assert not layer.trainable_weights
    assert_config_round_trip(layer, {"grid_size": [2, 3]})
