r"""Single XLA kernels of the tiny32 step, compiled and timed alone.

`profile_step.py --hlo_breakdown` measures each op inside the compiled
training step. This script times the same kinds of op alone, each in its
own XLA-compiled function on the current backend (JAX, or TensorFlow with
`jit_compile=True`), so that "this kernel is slow" can be told apart from
"this kernel is slow inside that program":

* `x @ w` for each `--matmul_shapes` entry `MxKxN` (the encoder's fc1, fc2
  and qkv forward at tiny32, batch 128, by default): GFLOP/s;
* the exact GELU `x * 0.5 * (1 + erf(x / sqrt(2)))` over an `M x N` array
  (`--gelu_shape`): ms and ns per element.

Medians of `--repeats` calls after warm-up; the result is read back (JAX:
`block_until_ready`, TensorFlow: `.numpy()`) inside each timed call.

    KERAS_BACKEND=jax python benchmarks/kernel_alone.py
    KERAS_BACKEND=tensorflow python benchmarks/kernel_alone.py
"""

import os
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("matmul_shapes", ["2176x192x768", "2176x768x192", "2176x192x576"],
                  "MxKxN of each x[M,K] @ w[K,N] to time, separated by commas.")
flags.DEFINE_string("gelu_shape", "2176x768", "MxN of the GELU's input.")
flags.DEFINE_integer("repeats", 50, "Timed calls per kernel; the median is reported.")


def _dims(text, count, flag):
    try:
        dims = [int(d) for d in text.split("x")]
    except ValueError:
        dims = []
    if len(dims) != count or min(dims) < 1:
        raise app.UsageError(f"--{flag}: {text!r} is not {count} positive integers joined by 'x'.")
    return dims


def _compiled(backend):
    """(jit, to_device, wait) for the backend."""
    if backend == "jax":
        import jax

        return jax.jit, jax.device_put, lambda out: out.block_until_ready()
    if backend == "tensorflow":
        import tensorflow as tf

        return (lambda fn: tf.function(fn, jit_compile=True)), tf.constant, lambda out: out.numpy()
    raise app.UsageError("kernel_alone.py times XLA kernels: KERAS_BACKEND=jax or tensorflow.")


def _median_seconds(fn, args, wait):
    for _ in range(3):
        wait(fn(*args))
    times = []
    for _ in range(FLAGS.repeats):
        start = time.perf_counter()
        wait(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    shapes = [_dims(s, 3, "matmul_shapes") for s in FLAGS.matmul_shapes]
    gelu_m, gelu_n = _dims(FLAGS.gelu_shape, 2, "gelu_shape")
    jit, to_device, wait = _compiled(backend)

    from benchmarks.hardware import hardware_label

    if backend == "jax":
        import jax

        erf, version = jax.lax.erf, f"JAX {jax.__version__}"
    else:
        import tensorflow as tf

        erf, version = tf.math.erf, f"TensorFlow {tf.__version__}"
    print(f"machine: {hardware_label()}")
    print(f"{version}, float32, median of {FLAGS.repeats} calls")
    rng = np.random.RandomState(0)
    matmul = jit(lambda x, w: x @ w)
    for m, k, n in shapes:
        x, w = (to_device(rng.randn(*s).astype("float32")) for s in ((m, k), (k, n)))
        seconds = _median_seconds(matmul, (x, w), wait)
        print(f"matmul [{m},{k}] x [{k},{n}]: {1e3 * seconds:.4g} ms, "
              f"{2 * m * k * n / seconds / 1e9:.0f} GFLOP/s")
    inv_sqrt2 = float(1 / np.sqrt(2.0))
    gelu = jit(lambda x: x * 0.5 * (1.0 + erf(x * inv_sqrt2)))
    x = to_device(rng.randn(gelu_m, gelu_n).astype("float32"))
    seconds = _median_seconds(gelu, (x,), wait)
    print(f"erf GELU [{gelu_m},{gelu_n}]: {1e3 * seconds:.4g} ms, "
          f"{1e9 * seconds / (gelu_m * gelu_n):.3f} ns per element")
    return 0


if __name__ == "__main__":
    app.run(main)
