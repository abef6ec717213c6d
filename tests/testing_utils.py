"""Helpers shared by the test suite (backend-aware where a test must be)."""

import os
import tempfile

import keras
import numpy as np
import pytest


def assert_config_round_trip(layer, constructor_args):
    """`get_config` returns exactly the constructor arguments, and
    `from_config(get_config())` gives an equal config."""
    config = layer.get_config()
    for key, value in constructor_args.items():
        got = config[key]
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(got, tuple):
            got = list(got)
        assert got == value, f"{type(layer).__name__}.get_config()[{key!r}] = {got!r} != {value!r}"
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def serialization_round_trip(obj):
    """Serialize with Keras' registered-object machinery and back."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))


def save_and_load_keras(model):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return keras.saving.load_model(path)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def value_and_grads(fn, *args):
    """Value of `fn(*tensors)` (a scalar) and its gradients w.r.t. each arg.

    Args are numpy arrays; gradients come back as numpy arrays (zeros where
    the backend reports no dependence).
    """
    backend = keras.backend.backend()
    args = [np.asarray(a, dtype="float32") for a in args]
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.constant(a) for a in args]
        with tf.GradientTape(persistent=True) as tape:
            for t in tensors:
                tape.watch(t)
            value = fn(*tensors)
        grads = tape.gradient(value, tensors, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return float(value), [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(fn, argnums=tuple(range(len(args))))(*args)
        return float(value), [np.asarray(g) for g in grads]
    if backend == "torch":
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = fn(*tensors)
        value.backward()
        grads = [
            np.zeros_like(a) if t.grad is None else t.grad.detach().cpu().numpy()
            for a, t in zip(args, tensors)
        ]
        return float(value.detach().cpu()), grads
    raise NotImplementedError(backend)


def tiny_encoder_config(**overrides):
    config = dict(image_size=16, patch_size=4, hidden_dim=32, num_layers=2, num_heads=2)
    config.update(overrides)
    return config


def tiny_pretrainer(**kwargs):
    from keras_ccmim import CCMIMPretrainer, ViTEncoder

    encoder_overrides = kwargs.pop("encoder_overrides", {})
    encoder = ViTEncoder(**tiny_encoder_config(**encoder_overrides), name="encoder")
    defaults = dict(
        decoder_hidden_dim=32, decoder_num_layers=1, decoder_num_heads=2, projection_dim=16, seed=7
    )
    defaults.update(kwargs)
    return CCMIMPretrainer(encoder, **defaults)


def loss_grads_wrt_trainable(model, loss_fn, x):
    """Gradients of `loss_fn(model(x, training=True))` w.r.t. the model's
    trainable variables, as a list of numpy arrays (zeros where unconnected).
    """
    backend = keras.backend.backend()
    variables = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn(model(x, training=True))
        grads = tape.gradient(
            value, [v.value for v in variables], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return [g.numpy() for g in grads]
    if backend == "jax":
        import jax

        trainable = [v.value for v in variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def f(tv):
            out, _ = model.stateless_call(tv, non_trainable, x, training=True)
            return loss_fn(out)

        return [np.asarray(g) for g in jax.grad(f)(trainable)]
    if backend == "torch":
        for v in variables:
            v.value.grad = None
        value = loss_fn(model(x, training=True))
        if not value.requires_grad:  # nothing recorded: no gradient anywhere
            return [np.zeros(v.shape) for v in variables]
        value.backward()
        return [
            np.zeros(v.shape) if v.value.grad is None else v.value.grad.detach().cpu().numpy()
            for v in variables
        ]
    raise NotImplementedError(backend)


def constructor_config(config):
    """A config without the build/compile state Keras adds after use."""
    if isinstance(config, dict):
        return {
            k: constructor_config(v)
            for k, v in config.items()
            if k not in ("build_config", "compile_config")
        }
    if isinstance(config, (list, tuple)):
        return [constructor_config(v) for v in config]
    return config


def is_grad_recording(tensor):
    """True when `tensor` is part of a recorded autograd graph (torch only):
    the proof that a no-gradient pass recorded nothing. Always False on
    TensorFlow and JAX, which record no graph eagerly per tensor."""
    if keras.backend.backend() == "torch":
        return bool(getattr(tensor, "requires_grad", False))
    return False


# The one backend that runs a backend-independent test (a script's plumbing:
# the studies, the GPU dry run, the input pipeline). torch, because its eager
# tiny steps start and run fastest here: the segmentation study's test took
# 23 s on torch against 113 s on TensorFlow and 82 s on JAX.
PLUMBING_BACKEND = "torch"
only_on_plumbing_backend = pytest.mark.skipif(
    keras.backend.backend() != PLUMBING_BACKEND,
    reason=f"backend-independent plumbing: runs once, on {PLUMBING_BACKEND}",
)


def read_events(log_dir):
    """`{tag: [(step, value), ...]}` of every event file under `log_dir`
    (scalars as floats, images as decoded uint8 arrays), with the plugin of
    each tag in `{tag: plugin}`."""
    import tensorflow as tf

    values, plugins = {}, {}
    for name in sorted(os.listdir(log_dir)):
        path = os.path.join(log_dir, name)
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag)
                plugins[value.tag] = plugin
                tensor = tf.make_ndarray(value.tensor)
                if plugin == "images":
                    data = tf.io.decode_png(tensor[2]).numpy()
                else:
                    data = float(tensor)
                values.setdefault(value.tag, []).append((event.step, data))
    return values, plugins


class CrashAtStep(keras.callbacks.Callback):
    """Raises `RuntimeError("simulated crash")` at the end of training step
    `at_step` (counted from 1 within this fit): a run killed mid-epoch."""

    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.step = at_step, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.at_step:
            raise RuntimeError("simulated crash")
