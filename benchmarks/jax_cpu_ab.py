r"""Side-by-side A/B of the JAX training step's compiled variants, in one process.

Separate processes on a shared 2-core VM scatter by 10-20% from one run to
the next, more than most of the effects worth measuring here. This script
compiles every variant of the library's JAX step in one process and times
them in interleaved rounds (the order reversed every other round), each
round a few steps of each variant from its own copy of the training state,
and prints the median step time and the ratio to the first variant.

Two kinds of variant:

* `--paths`: the library's JAX-on-CPU paths against Keras' stock ones
  (`keras_ccmim.backend_specific`): `library` (all of ours), and
  `stock_attention`, `stock_gelu`, `stock_layer_norm` (one of them replaced
  by `keras.ops.dot_product_attention`, Keras' `"gelu"` or Keras'
  LayerNorm). Each builds its own model with the same seed.
* `--xla_options`: the library's step compiled with XLA:CPU debug options,
  `name:key=value,key=value;name2:...` (`true`/`false` and integers are
  parsed; an empty value is the empty string), passed to
  `jax.jit(...).lower(...).compile(compiler_options=...)`.

    KERAS_BACKEND=jax python benchmarks/jax_cpu_ab.py \
        --paths=library,stock_attention,stock_gelu,stock_layer_norm
    KERAS_BACKEND=jax python benchmarks/jax_cpu_ab.py --paths=library \
        --xla_options='ynn_off:xla_cpu_experimental_ynn_fusion_type=;serial:xla_cpu_enable_concurrency_optimized_scheduler=false'
"""

import json
import os
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("variant", "mae", ["mae", "ccmim"], "Which step to time.")
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Model preset.")
flags.DEFINE_integer("num_layers", None, "Override: encoder blocks.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_list("paths", ["library"], "Model variants (module docstring); the first is the baseline.")
flags.DEFINE_string("xla_options", "", "Compile-option variants of the library's step (module docstring).")
flags.DEFINE_integer("rounds", 7, "Interleaved rounds; the median is reported.")
flags.DEFINE_integer("steps", 5, "Timed steps per variant per round.")
flags.DEFINE_string("output", None, "Write the results as JSON here.")

STOCK = ("attention", "gelu", "layer_norm")


def parse_xla_options(text):
    """`name:key=value,...;...` -> {name: {key: value}} (module docstring)."""
    variants = {}
    for chunk in filter(None, (c.strip() for c in text.split(";"))):
        name, sep, body = chunk.partition(":")
        if not sep or not name:
            raise app.UsageError(f"--xla_options: {chunk!r} is not name:key=value,...")
        options = {}
        for item in filter(None, body.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise app.UsageError(f"--xla_options: {item!r} in {name!r} is not key=value.")
            if value.lower() in ("true", "false"):
                options[key] = value.lower() == "true"
            elif value.lstrip("-").isdigit():
                options[key] = int(value)
            else:
                options[key] = value
        variants[name] = options
    return variants


def _stock_patches(path):
    """The `backend_specific` functions that `path` replaces with Keras' own."""
    import keras

    if path == "library":
        return {}
    if not path.startswith("stock_") or path[len("stock_"):] not in STOCK:
        choices = ", ".join(["library", *(f"stock_{s}" for s in STOCK)])
        raise app.UsageError(f"--paths: unknown {path!r}; choose from {choices}.")
    return {
        "stock_attention": {"dot_product_attention":
                            lambda q, k, v, scale: keras.ops.dot_product_attention(q, k, v, scale=scale)},
        "stock_gelu": {"gelu_fn": lambda: None},
        "stock_layer_norm": {"layer_norm_fn": lambda: None},
    }[path]


def _build(path, images):
    """(lowered step, state, images) of the library's step with `path`'s
    patches; `images=None` makes the batch (seeded) from the model's input
    shape."""
    import jax
    import keras

    from benchmarks.step_backend import Backend
    from keras_ccmim import CCMIMPretrainer, backend_specific

    patches = _stock_patches(path)
    saved = {name: getattr(backend_specific, name) for name in patches}
    try:
        for name, fn in patches.items():
            setattr(backend_specific, name, fn)
        kwargs = dict(masking="random", contrastive="none") if FLAGS.variant == "mae" else {}
        overrides = {"num_layers": FLAGS.num_layers} if FLAGS.num_layers else {}
        model = CCMIMPretrainer.from_architecture(FLAGS.preset, encoder_overrides=overrides, seed=0, **kwargs)
        if images is None:
            enc = model.encoder
            shape = (FLAGS.batch_size, *enc.image_size, enc.num_channels)
            images = jax.device_put(np.random.RandomState(0).randn(*shape).astype("float32"))
        model.compile(optimizer=keras.optimizers.AdamW(1.5e-4 * FLAGS.batch_size / 256, beta_1=0.9,
                                                       beta_2=0.95, weight_decay=0.05),
                      jit_compile=True)

        model.fit(Backend("jax").batches(images), steps_per_epoch=1, epochs=1, verbose=0)  # builds, traces
        state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True)
        lowered = jax.jit(model.train_step, donate_argnums=0).lower(state, (images,))
    finally:
        for name, fn in saved.items():
            setattr(backend_specific, name, fn)
    return lowered, state, images


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import keras

    if keras.backend.backend() != "jax":
        raise app.UsageError("jax_cpu_ab.py times the JAX step: run it with KERAS_BACKEND=jax.")
    import jax
    import jax.numpy as jnp

    from benchmarks.hardware import hardware_label

    xla_variants = parse_xla_options(FLAGS.xla_options)
    clash = set(xla_variants) & set(FLAGS.paths)
    if clash:
        raise app.UsageError(f"Variant names used twice: {sorted(clash)}.")
    for path in FLAGS.paths:
        _stock_patches(path)  # an unknown name fails before anything compiles
    compiled, states, compile_seconds = {}, {}, {}
    images = None
    for path in FLAGS.paths:
        lowered, state, images = _build(path, images)
        start = time.perf_counter()
        compiled[path] = lowered.compile()
        compile_seconds[path] = time.perf_counter() - start
        states[path] = jax.tree.map(jnp.copy, state)
        if path == FLAGS.paths[0]:
            for name, options in xla_variants.items():
                start = time.perf_counter()
                compiled[name] = lowered.compile(compiler_options=options)
                compile_seconds[name] = time.perf_counter() - start
                states[name] = jax.tree.map(jnp.copy, state)

    names = list(compiled)
    times = {name: [] for name in names}
    for index in range(FLAGS.rounds):
        for name in names if index % 2 == 0 else names[::-1]:
            fn, state = compiled[name], states[name]
            _, state = fn(state, (images,))  # one untimed step: caches, thread pool
            jax.block_until_ready(state)
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                logs, state = fn(state, (images,))
            jax.block_until_ready((logs, state))
            times[name].append((time.perf_counter() - start) / FLAGS.steps)
            states[name] = state

    base = float(np.median(times[names[0]]))
    machine = hardware_label()
    print(f"machine: {machine}")
    print(f"JAX {jax.__version__}, {FLAGS.variant} step, {FLAGS.preset}, batch {FLAGS.batch_size}, "
          f"{FLAGS.rounds} interleaved rounds of {FLAGS.steps} steps")
    print(f"| variant | ms per step | img/s | time / {names[0]} | rounds (ms) |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for name in names:
        median = float(np.median(times[name]))
        rows.append({"variant": name, "options": xla_variants.get(name, {}),
                     "step_seconds": times[name], "median_step_seconds": median,
                     "images_per_second": FLAGS.batch_size / median, "time_ratio": median / base,
                     "compile_seconds": compile_seconds[name]})
        print(f"| {name} | {1e3 * median:.1f} | {FLAGS.batch_size / median:.1f} | {median / base:.3f} "
              f"| {' '.join(str(round(1e3 * t)) for t in times[name])} |")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"machine": machine, "jax": jax.__version__, "variant": FLAGS.variant,
                       "preset": FLAGS.preset, "batch_size": FLAGS.batch_size,
                       "rounds": FLAGS.rounds, "steps": FLAGS.steps, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
