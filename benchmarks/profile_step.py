r"""Where the time of one training step goes, by op kind.

Traces a few `train_on_batch` calls of MAE or ccMIM on the current Keras
backend with the backend's profiler and prints the op time grouped by kind,
per step and as a share of the total:

* JAX and TensorFlow (XLA-compiled): the trace's `XSpace` protobuf, grouped
  by XLA op kind (`dot`, `ynn_fusion`, `copy_bitcast_fusion`, ...: the HLO
  name without its number);
* torch (eager): `torch.profiler`'s self CPU time per `aten::` op, the
  number of ops dispatched per step, and the step's wall time that no op
  accounts for (Python, Keras and dispatch overhead).

`--model=reference` profiles the plain-Keras MAE of
`benchmarks/reference_mae.py` instead, to compare our layers with Keras'.

    KERAS_BACKEND=jax python benchmarks/profile_step.py --variant=mae
    KERAS_BACKEND=torch python benchmarks/profile_step.py --variant=mae

XLA:CPU records one event per op only with
`XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true`, which this script sets
before the backend starts unless XLA_FLAGS already names it.
"""

import collections
import glob
import os
import re
import tempfile

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_enum("variant", "mae", ["mae", "ccmim"], "Which step to profile.")
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Model preset.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("warmup_steps", 3, "Steps before tracing (compilation included).")
flags.DEFINE_integer("steps", 3, "Traced steps.")
flags.DEFINE_integer("top", 25, "Op kinds to print.")
flags.DEFINE_enum("model", "library", ["library", "reference"],
                  "The library's step, or the plain-Keras reference MAE (--variant=mae only).")


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


def profile_torch(model, images):
    """Self CPU time per aten op of eager torch steps, and the wall time left
    over (Python, Keras and dispatch)."""
    import time

    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            model.train_on_batch(images)
        wall = (time.perf_counter() - start) / FLAGS.steps
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    ops = {e.key: e.self_cpu_time_total * 1e-6 / FLAGS.steps for e in events}
    count = sum(e.count for e in events) / FLAGS.steps
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        model.train_on_batch(images)
    unprofiled = (time.perf_counter() - start) / FLAGS.steps
    op_time = sum(ops.values())
    print(f"torch {FLAGS.variant} step ({FLAGS.model}), batch {FLAGS.batch_size}: "
          f"{1e3 * unprofiled:.0f} ms per step unprofiled, {1e3 * wall:.0f} ms profiled, of "
          f"which aten ops' self time {1e3 * op_time:.0f} ms ({100 * op_time / wall:.0f}%); "
          f"{count:.0f} aten ops dispatched per step")
    print_shares("| op | ms per step | share of op time |", ops)
    return 0


def print_shares(header, seconds_per_step):
    """The `--top` largest entries as a table: ms per step and share of the total."""
    total = sum(seconds_per_step.values())
    print(header)
    print("| --- | --- | --- |")
    for name, seconds in sorted(seconds_per_step.items(), key=lambda kv: -kv[1])[:FLAGS.top]:
        print(f"| {name} | {1e3 * seconds:.1f} | {100 * seconds / total:.1f}% |")


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
    kwargs = dict(masking="random", contrastive="none") if FLAGS.variant == "mae" else {}
    model = CCMIMPretrainer.from_preset(FLAGS.preset, **kwargs)
    height, width = model.encoder.image_size
    if FLAGS.model == "reference":
        if FLAGS.variant != "mae":
            raise app.UsageError("--model=reference is an MAE step: use --variant=mae.")
        from benchmarks.reference_mae import ReferenceMAE

        enc = model.encoder
        model = ReferenceMAE(height, enc.patch_size, enc.hidden_dim, enc.num_layers,
                             enc.num_heads, model.decoder_hidden_dim, model.decoder_num_layers,
                             model.decoder_num_heads, mask_ratio=model.mask_ratio)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=backend != "torch")
    images = np.random.RandomState(0).rand(FLAGS.batch_size, height, width, 3).astype("float32")
    for _ in range(FLAGS.warmup_steps):
        model.train_on_batch(images)

    if backend == "torch":
        return profile_torch(model, images)
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
    print_shares("| op kind | ms per step | share |",
                 {kind: seconds / FLAGS.steps for kind, seconds in ops.items()})
    return 0


if __name__ == "__main__":
    app.run(main)
