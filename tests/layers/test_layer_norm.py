"""`keras_ccmim.layers.layer_norm.LayerNormalization` against Keras' layer, and the
JAX fast path of `backend_specific` it uses."""

import keras
import numpy as np
import pytest

from keras_ccmim import backend_specific
from keras_ccmim.layers.layer_norm import LayerNormalization
from tests.testing_utils import (
    assert_config_round_trip,
    save_and_load_keras,
    serialization_round_trip,
    to_numpy,
    value_and_grads,
)


def _pair(shape, epsilon=1e-6, **kwargs):
    """Our `LayerNormalization` and `keras.layers.LayerNormalization` with the same
    random (non-trivial) gamma and beta."""
    ours = LayerNormalization(epsilon=epsilon, **kwargs)
    ref = keras.layers.LayerNormalization(epsilon=epsilon, **kwargs)
    ours.build(shape)
    ref.build(shape)
    rng = np.random.RandomState(0)
    for a, b in zip(ours.weights, ref.weights):
        value = rng.randn(*a.shape).astype("float32")
        a.assign(value)
        b.assign(value)
    return ours, ref


def _input(shape, seed=1):
    # Offset and scaled rows, as residual streams are.
    rng = np.random.RandomState(seed)
    return (rng.randn(*shape) * 3 + rng.randn(*shape[:-1], 1) * 5).astype("float32")


@pytest.mark.parametrize("shape", [(2, 5, 16), (3, 8)])
def test_forward_equals_keras(shape):
    ours, ref = _pair(shape)
    x = _input(shape)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(ref(x)), rtol=1e-5, atol=1e-5)


def test_weights_are_named_like_keras():
    ours, ref = _pair((2, 4, 8))
    assert [w.path.split("/")[-1] for w in ours.weights] == ["gamma", "beta"]
    assert [w.name for w in ours.weights] == [w.name for w in ref.weights]


def test_input_and_weight_gradients_equal_keras():
    shape = (2, 5, 16)
    ours, ref = _pair(shape)
    x = _input(shape)
    cotangent = np.random.RandomState(2).randn(*shape).astype("float32")

    def objective(layer):
        gamma = to_numpy(layer.gamma)
        beta = to_numpy(layer.beta)

        def fn(inputs, g, b):
            out = _call_with(layer, inputs, g, b)
            return keras.ops.sum(out * keras.ops.convert_to_tensor(cotangent))

        return value_and_grads(fn, x, gamma, beta)

    value, grads = objective(ours)
    ref_value, ref_grads = objective(ref)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _call_with(layer, inputs, gamma, beta):
    """`layer(inputs)` with gamma and beta given as tensors (so they can be
    differentiated on every backend)."""
    values = {id(layer.gamma): gamma, id(layer.beta): beta}
    mapping = [(v, values[id(v)]) for v in layer.weights]
    with keras.StatelessScope(state_mapping=mapping):
        return layer(inputs)


def test_gradients_in_a_training_step_equal_keras():
    """Both layers inside a small model: one SGD step moves the weights alike."""
    shape = (4, 6, 8)
    x = _input(shape)
    y = np.random.RandomState(3).randn(*shape).astype("float32")
    models = []
    for layer_cls in (LayerNormalization, keras.layers.LayerNormalization):
        keras.utils.set_random_seed(5)
        inputs = keras.Input(shape[1:])
        h = keras.layers.Dense(8, name="dense")(inputs)
        outputs = layer_cls(epsilon=1e-6, name="norm")(h)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=4, epochs=1, verbose=0)
        models.append(model)
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX custom gradient")
def test_jax_custom_gradient_equals_autodiff_of_plain_layer_norm():
    import jax
    import jax.numpy as jnp

    fn = backend_specific.layer_norm_fn()
    assert fn is not None

    def plain(x, gamma, beta):
        mean = jnp.mean(x, -1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + 1e-6) * gamma + beta

    x = jnp.asarray(_input((3, 7, 32)))
    rng = np.random.RandomState(4)
    gamma, beta = (jnp.asarray(rng.randn(32).astype("float32")) for _ in range(2))
    cotangent = jnp.asarray(rng.randn(3, 7, 32).astype("float32"))

    def loss(f):
        return lambda x, g, b: jnp.sum(f(x, g, b) * cotangent)

    custom = jax.grad(loss(lambda x, g, b: fn(x, g, b, 1e-6)), argnums=(0, 1, 2))(x, gamma, beta)
    expected = jax.grad(loss(plain), argnums=(0, 1, 2))(x, gamma, beta)
    for got, want in zip(custom, expected):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
    # Under jit, and the second derivative is not needed by training.
    jitted = jax.jit(jax.grad(loss(lambda x, g, b: fn(x, g, b, 1e-6))))(x, gamma, beta)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(expected[0]), rtol=1e-4, atol=1e-4)


def test_fast_path_only_on_jax():
    on_jax = keras.backend.backend() == "jax"
    assert (backend_specific.layer_norm_fn() is not None) == on_jax


@pytest.mark.parametrize(
    "kwargs", [dict(center=False), dict(scale=False), dict(axis=(1, 2))]
)
def test_other_configurations_fall_back_to_keras(kwargs):
    shape = (2, 5, 6)
    ours, ref = _pair(shape, **kwargs)
    x = _input(shape)
    np.testing.assert_allclose(to_numpy(ours(x)), to_numpy(ref(x)), rtol=1e-5, atol=1e-5)


def test_mixed_precision_computes_in_float32():
    shape = (2, 5, 16)
    ours, ref = _pair(shape, dtype="mixed_bfloat16")
    x = _input(shape)
    out = ours(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(
        to_numpy(keras.ops.cast(out, "float32")),
        to_numpy(keras.ops.cast(ref(x), "float32")),
        rtol=2e-2,
        atol=2e-2,
    )


def test_config_round_trip_and_serialization():
    layer = LayerNormalization(epsilon=1e-5, name="norm")
    assert_config_round_trip(layer, {"epsilon": 1e-5})
    clone = serialization_round_trip(layer)
    assert isinstance(clone, LayerNormalization)
    assert clone.get_config() == layer.get_config()


def test_checkpoints_load_across_the_two_layers(tmp_path):
    """Weights written with Keras' layer load into ours (and the paths match)."""

    class Holder(keras.Model):
        def __init__(self, norm_cls, **kwargs):
            super().__init__(**kwargs)
            self.norm = norm_cls(epsilon=1e-6, name="norm")

        def call(self, x):
            return self.norm(x)

    x = _input((2, 3, 8))
    old = Holder(keras.layers.LayerNormalization)
    old(x)
    for w in old.weights:
        w.assign(np.random.RandomState(6).randn(*w.shape).astype("float32"))
    path = str(tmp_path / "norm.weights.h5")
    old.save_weights(path)
    new = Holder(LayerNormalization)
    new(x)
    new.load_weights(path)
    np.testing.assert_allclose(to_numpy(new(x)), to_numpy(old(x)), rtol=1e-5, atol=1e-5)


def test_keras_file_round_trip():
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, LayerNormalization(name="norm")(inputs))
    x = _input((2, 5, 8))
    loaded = save_and_load_keras(model)
    assert isinstance(loaded.get_layer("norm"), LayerNormalization)
    np.testing.assert_allclose(to_numpy(loaded(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6)


def test_encoder_checkpoint_paths_are_keras_paths(tmp_path):
    """The encoder's final norm lives in `ViTEncoder.layers`, which `.weights.h5`
    addresses by snake-cased class name: it must stay `layer_normalization`."""
    import h5py

    from keras_ccmim import ViTEncoder

    encoder = ViTEncoder(image_size=8, patch_size=4, hidden_dim=8, num_layers=1, num_heads=2)
    encoder.build()
    path = str(tmp_path / "encoder.weights.h5")
    encoder.save_weights(path)
    names = []
    with h5py.File(path, "r") as f:
        f.visit(names.append)
    assert "layers/layer_normalization/vars" in names
    assert "blocks/transformer_block/norm1/vars" in names


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX platform gating")
@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_jax_off_cpu_uses_the_stock_paths(platform, monkeypatch):
    """The hand-written LayerNorm was measured faster on CPU only: on any
    other JAX platform Keras' own runs."""
    monkeypatch.setattr(backend_specific, "jax_platform", lambda: platform)
    assert backend_specific.layer_norm_fn() is None
    monkeypatch.setattr(backend_specific, "jax_platform", lambda: "cpu")
    assert backend_specific.layer_norm_fn() is not None
