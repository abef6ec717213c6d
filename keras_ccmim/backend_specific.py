"""The only module of the library that knows which Keras backend runs it.

Everything else is written with `keras` and `keras.ops`. What lives here:

* `no_grad()`: a context in which the work is never differentiated. On torch
  `keras.ops.stop_gradient` only detaches an output, and the computation that
  led to it is still recorded by autograd (memory and time for nothing), so the
  ccMIM scoring and teacher passes run under `torch.no_grad()`. TensorFlow and
  JAX build no gradient work for a stop-gradient branch that nothing
  differentiates (XLA prunes it), so there it is a no-op.
* `checked_image_size(images, image_size, message)`: on TensorFlow, the
  images behind an assertion in the graph that they are `image_size`, for
  the exported SavedModel: its signatures check only the dtype of their
  input, not the size the graph was traced at. Elsewhere the images as they
  are: JAX's exported module (`XlaCallModule`) refuses another static size
  itself.
* `layer_norm_fn()`: the backend's own LayerNorm over the last axis, or
  `None` to use Keras'. On JAX on CPU, where XLA compiles the automatic
  LayerNorm gradient poorly, it is a `jax.custom_vjp` with a hand-written
  backward pass whose row reductions sit behind
  `jax.lax.optimization_barrier` (used by
  `keras_ccmim.layers.layer_norm.LayerNormalization`); elsewhere Keras' runs.
* `gelu_fn()`: the backend's exact GELU for the MLP, or `None` to use Keras'
  `"gelu"`. On JAX on CPU: JAX's exact GELU is written with `erfc`, which XLA expands into
  a long, slow sequence on CPU; JAX gets the same function written with
  `erf` (as TensorFlow's is) and a one-pass hand-written derivative.
* `dot_product_attention(q, k, v, scale)`: `keras.ops.dot_product_attention`
  (the fused kernel: torch SDPA, cuDNN on GPU), except on JAX on CPU, where
  no fused kernel exists and `jax.nn.dot_product_attention`'s XLA path spent
  most of its time in the softmax and its gradient (the row reductions
  again); there heads-first batched matmuls and a softmax with a
  hand-written gradient run instead (their timings: docs/performance/).

  These three JAX paths were measured faster on CPU only, so each is chosen
  only when JAX's platform (`jax_platform()`) is `"cpu"`; on GPU and TPU
  the stock Keras paths run.
* `cross_replica_gather()`: under `tf.distribute` with several replicas,
  `(gather, replica_id)` where `gather(x)` concatenates `x` of every replica
  along the batch axis (`ReplicaContext.all_gather`, whose gradient sends
  each replica's share back to it), so the InfoNCE negatives come from the
  global batch; `None` elsewhere (JAX data parallelism is one program over
  the global batch already, torch runs on one device).
* `sync_batch_norm()`: whether BatchNorm should synchronise its batch
  statistics across replicas (Keras' `synchronized=True`, which only
  TensorFlow accepts; JAX's BatchNorm already sees the global batch).
"""

import contextlib
import functools

import keras


def backend_name():
    return keras.backend.backend()


def no_grad():
    """Context manager under which no autograd graph is recorded (torch)."""
    if backend_name() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


def checked_image_size(images, image_size, message):
    """`images [B, H, W, C]`, failing at run time with `message` unless
    `(H, W) == image_size` (TensorFlow; see the module doc)."""
    if backend_name() != "tensorflow":
        return images
    import tensorflow as tf

    check = tf.debugging.assert_equal(
        tf.shape(images)[1:3], tf.constant(image_size, tf.int32), message=message
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def jax_platform():
    """JAX's default platform (`"cpu"`, `"gpu"`, `"tpu"`); None elsewhere."""
    if backend_name() != "jax":
        return None
    import jax

    return jax.default_backend()


def _jax_on_cpu():
    return jax_platform() == "cpu"


def layer_norm_fn():
    """A fast LayerNorm over the last axis for this backend, or `None`.

    Returns `fn(x, gamma, beta, epsilon) -> y` computing
    `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis, in
    the dtype of `x` (callers pass float32). Only JAX has one; elsewhere
    Keras' `ops.layer_normalization` is already good (torch uses its fused
    kernel); on JAX off CPU Keras' is used too.
    """
    if _jax_on_cpu():
        return _jax_layer_norm()
    return None


@functools.lru_cache(maxsize=None)
def _jax_layer_norm():
    import jax
    import jax.numpy as jnp

    def forward(x, gamma, beta, epsilon):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        inv = jax.lax.rsqrt(variance + epsilon)
        normed = centered * inv
        return normed * gamma + beta, (normed, inv)

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def layer_norm(x, gamma, beta, epsilon):
        return forward(x, gamma, beta, epsilon)[0]

    def layer_norm_fwd(x, gamma, beta, epsilon):
        y, (normed, inv) = forward(x, gamma, beta, epsilon)
        return y, (normed, inv, gamma)

    def layer_norm_bwd(epsilon, residuals, dy):
        del epsilon
        normed, inv, gamma = residuals
        batch_axes = tuple(range(dy.ndim - 1))
        d_gamma = jnp.sum(dy * normed, axis=batch_axes)
        d_beta = jnp.sum(dy, axis=batch_axes)
        d_normed = dy * gamma
        # The two row reductions of the input gradient. Behind the barrier
        # XLA computes each once instead of fusing (and re-computing) them
        # into the elementwise consumer, which is what made the automatic
        # backward pass slow on CPU.
        mean_d = jnp.mean(d_normed, axis=-1, keepdims=True)
        mean_dn = jnp.mean(d_normed * normed, axis=-1, keepdims=True)
        mean_d, mean_dn = jax.lax.optimization_barrier((mean_d, mean_dn))
        dx = inv * (d_normed - mean_d - normed * mean_dn)
        return dx, d_gamma, d_beta

    layer_norm.defvjp(layer_norm_fwd, layer_norm_bwd)
    return layer_norm


def scale_loss_for_replicas(loss):
    """Divide a per-replica loss by the number of replicas under `tf.distribute`.

    Keras' `MirroredStrategy` training sums the replicas' gradients, so a loss
    computed in a custom `compute_loss` must be divided by the replica count
    (Keras' own compiled losses do the same). Each replica's InfoNCE then
    uses the negatives of the global batch (`cross_replica_gather`). JAX
    data parallelism sees the global batch in one program, and torch trains
    on one device: both unchanged.
    """
    if backend_name() == "tensorflow":
        import tensorflow as tf

        if tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                return loss / replicas
    return loss


def _tensorflow_replica_context():
    """The replica context of a `tf.distribute` step with several replicas."""
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync < 2:
        return None
    return context


def cross_replica_gather():
    """`(gather, replica_id)` under `tf.distribute` with several replicas,
    else None (see the module docstring). `gather(x)` is `[R * B, ...]`
    for `x` of `[B, ...]`, replica `r`'s rows at `r * B`; `replica_id` is a
    scalar int32 tensor."""
    if backend_name() != "tensorflow":
        return None
    context = _tensorflow_replica_context()
    if context is None:
        return None
    import tensorflow as tf

    def gather(x):
        return context.all_gather(x, axis=0)

    return gather, tf.cast(context.replica_id_in_sync_group, tf.int32)


def sync_batch_norm():
    """`synchronized=` of the contrastive heads' BatchNorm (module docstring):
    True when built under a `tf.distribute` strategy of several replicas.
    (Elsewhere it stays False: Keras' synchronised moments are `E[x^2] -
    E[x]^2`, which would change single-device numerics for nothing.)"""
    if backend_name() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1


def gelu_fn():
    """An exact GELU `0.5 * x * (1 + erf(x / sqrt(2)))` for this backend, or `None`.

    Only JAX on CPU has one (see the module docstring); TensorFlow's
    `tf.nn.gelu` already uses `erf` and torch's is a fused kernel.
    """
    if _jax_on_cpu():
        return _jax_gelu()
    return None


@functools.lru_cache(maxsize=None)
def _jax_gelu():
    import jax
    import jax.numpy as jnp
    import numpy as np

    inv_sqrt2 = float(1.0 / np.sqrt(2.0))
    inv_sqrt2pi = float(1.0 / np.sqrt(2.0 * np.pi))

    def cdf(x):
        return 0.5 * (1.0 + jax.lax.erf(x * jnp.asarray(inv_sqrt2, x.dtype)))

    @jax.custom_vjp
    def gelu(x):
        return x * cdf(x)

    def gelu_fwd(x):
        phi = cdf(x)
        return x * phi, (x, phi)

    def gelu_bwd(residuals, dy):
        x, phi = residuals
        pdf = jnp.exp(-0.5 * jnp.square(x)) * jnp.asarray(inv_sqrt2pi, x.dtype)
        return (dy * (phi + x * pdf),)

    gelu.defvjp(gelu_fwd, gelu_bwd)
    return gelu


def dot_product_attention(query, key, value, scale):
    """Softmax attention `[B, T, H, Dh]` x3 -> `[B, T, H, Dh]` (no mask).

    `keras.ops.dot_product_attention` everywhere except JAX on CPU (see the
    module docstring); the same function either way.
    """
    if _jax_on_cpu():
        return _jax_cpu_attention()(query, key, value, float(scale))
    return keras.ops.dot_product_attention(query, key, value, scale=scale)


@functools.lru_cache(maxsize=None)
def _jax_cpu_attention():
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def softmax(logits):
        exp = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
        return exp * (1.0 / jnp.sum(exp, axis=-1, keepdims=True))

    def softmax_fwd(logits):
        probs = softmax(logits)
        return probs, probs

    def softmax_bwd(probs, d_probs):
        # The row reduction behind a barrier, as in the LayerNorm gradient.
        row = jax.lax.optimization_barrier(jnp.sum(d_probs * probs, axis=-1, keepdims=True))
        return (probs * (d_probs - row),)

    softmax.defvjp(softmax_fwd, softmax_bwd)

    def attention(query, key, value, scale):
        dtype = query.dtype
        q, k, v = (jnp.swapaxes(t, 1, 2) for t in (query, key, value))  # [B, H, T, Dh]
        logits = jnp.matmul(
            q * jnp.asarray(scale, dtype), jnp.swapaxes(k, -1, -2),
            preferred_element_type=jnp.float32,
        )
        probs = softmax(logits).astype(dtype)
        return jnp.swapaxes(jnp.matmul(probs, v), 1, 2)

    return attention
