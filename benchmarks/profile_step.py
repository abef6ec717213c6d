r"""Where the time of one compiled training step goes, by XLA op kind.

Traces a few `train_on_batch` calls of MAE or ccMIM on the current Keras
backend (JAX or TensorFlow, both XLA-compiled) with the backend's profiler,
reads the trace (`XSpace` protobuf) and prints the traced op time grouped by
op kind (`dot`, `ynn_fusion`, `copy_bitcast_fusion`, ...: the HLO name
without its number), per step and as a share of the total.

    KERAS_BACKEND=jax python benchmarks/profile_step.py --variant=mae

XLA:CPU records one event per op only with
`XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true`, which this script sets
before the backend starts unless XLA_FLAGS already names it.
"""

import collections
import glob
import os
import re
import sys
import tempfile

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FLAGS = flags.FLAGS
flags.DEFINE_enum("variant", "mae", ["mae", "ccmim"], "Which step to profile.")
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Model preset.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("warmup_steps", 3, "Steps before tracing (compilation included).")
flags.DEFINE_integer("steps", 3, "Traced steps.")
flags.DEFINE_integer("top", 25, "Op kinds to print.")


def op_kind_seconds(xspace_path, skip_lines=("python",)):
    """{(thread line, op kind): seconds} summed over a trace's events."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xspace_path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if line.name in skip_lines:
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                kind = re.sub(r"[.\d]+$", "", name)
                totals[kind] += event.duration_ps * 1e-12
    return totals


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if "xla_cpu_enable_xprof_traceme" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true"
        ).strip()
    import keras
    import numpy as np

    from keras_ccmim import CCMIMPretrainer

    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise app.UsageError(f"Profiles XLA-compiled steps: use JAX or TensorFlow, not {backend}.")
    kwargs = dict(masking="random", contrastive="none") if FLAGS.variant == "mae" else {}
    model = CCMIMPretrainer.from_preset(FLAGS.preset, **kwargs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=True)
    height, width = model.encoder.image_size
    images = np.random.RandomState(0).rand(FLAGS.batch_size, height, width, 3).astype("float32")
    for _ in range(FLAGS.warmup_steps):
        model.train_on_batch(images)

    with tempfile.TemporaryDirectory() as logdir:
        if backend == "jax":
            import jax

            jax.profiler.start_trace(logdir)
        else:
            import tensorflow as tf

            tf.profiler.experimental.start(logdir)
        for _ in range(FLAGS.steps):
            model.train_on_batch(images)
        if backend == "jax":
            jax.profiler.stop_trace()
        else:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"The profiler wrote no trace under {logdir}.")
        totals = op_kind_seconds(paths[0])

    # Executor spans enclose the ops and "$..." events are Python frames;
    # leave both out of the shares.
    ops = {k: v for k, v in totals.items()
           if "Execute" not in k and not k.startswith(("end:", "$"))}
    total = sum(ops.values())
    print(f"{backend} {FLAGS.variant} step, batch {FLAGS.batch_size}: traced op time "
          f"{1e3 * total / FLAGS.steps:.0f} ms per step")
    print("| op kind | ms per step | share |")
    print("| --- | --- | --- |")
    for kind, seconds in sorted(ops.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
        print(f"| {kind} | {1e3 * seconds / FLAGS.steps:.1f} | {100 * seconds / total:.1f}% |")
    return 0


if __name__ == "__main__":
    app.run(main)
