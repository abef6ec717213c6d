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

On JAX and TensorFlow the traced steps are `fit` steps, the steady state of
training: `train_on_batch` on JAX passes the whole training state into the
compiled step on every call (`shard_args` and `DevicePutWithSharding`, about
70 ms per tiny32 step), which `fit` does once per epoch.

`--hlo_breakdown` (JAX and TensorFlow) also dumps the compiled step's
optimised HLO and joins it with the trace: every dot by operand shapes and
contracting dimensions (count, GFLOP, ms, GFLOP/s), the dots' FLOPs per
image against `keras_ccmim.flops` (an independent count: the two should
agree within a few percent), and the other ops grouped by the source op that
XLA records (`block_N/fc1/erf`, ...). With it, two backends' compiled
programs can be compared op for op. XLA:CPU may run independent ops
concurrently and attribute one op's wait to the next, so a single op's
milliseconds can mislead (weight-gradient dots at several TFLOP/s are such
cases); the totals and the grouped rows are what to compare.

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

import numpy as np
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
flags.DEFINE_boolean("hlo_breakdown", False,
                     "JAX and TensorFlow: join the trace with the optimised HLO (module docstring).")

# The compiled training step's module in an XLA dump, per backend.
STEP_MODULE = {"jax": "jit_train_step", "tensorflow": "one_step_on_data"}


_ENCLOSING = ("BlockUntilReady", "KernelAndDeviceFunc", "one_step_on_data", "multi_step_on_iterator")


def op_seconds(xspace_path, skip_lines=("python",)):
    """{event name: seconds} summed over a trace's op events. Left out: the
    spans that enclose the ops (executors, TensorFlow's function call and its
    wait, `BlockUntilReady`) and Python frames ("$...")."""
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
                if ("Execut" in name or name in _ENCLOSING
                        or name.startswith(("end:", "$", "__inference", *_ENCLOSING))):
                    continue
                totals[name] += event.duration_ps * 1e-12
    return totals


def op_kind(name):
    """The HLO op kind of an event name: `ynn_fusion.280` -> `ynn_fusion`."""
    return re.sub(r"[.\d]+$", "", name)


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \w+\[([\d,]*)\]\S* ([\w\-]+)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")


def parse_hlo(path):
    """The instructions of an optimised HLO text dump: {name: dict(dims,
    op, operands, attributes, computation, source)} and {called computation:
    the instruction that calls it} (a fusion and its body)."""
    instructions, callers, computation = {}, {}, None
    with open(path) as f:
        for line in f:
            match = _COMPUTATION.match(line)
            if match and " = " not in line.split("(")[0]:
                computation = match.group(1)
                continue
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            name, dims, op, rest = match.groups()
            source = re.search(r'op_name="([^"]*)"', rest)
            instructions[name] = {
                "dims": [int(d) for d in dims.split(",") if d],
                "op": op,
                "operands": re.findall(r"%([\w.\-]+)", rest.split(")")[0]),
                "attributes": rest,
                "computation": computation,
                "source": source.group(1) if source else "",
            }
            called = re.search(r"calls=%([\w.\-]+)", rest)
            if called:
                callers[called.group(1)] = name
    return instructions, callers


def _dims_attribute(attributes, key):
    match = re.search(key + r"=\{([\d,]*)\}", attributes)
    return [int(d) for d in match.group(1).split(",") if d] if match else []


def hlo_breakdown(hlo_path, seconds, steps):
    """`(dot_rows, other_rows, dot_flops)` of one step: the dots grouped by
    (lhs, rhs, contracting dims, batched) as [count, flops, seconds], the
    other ops grouped by (kind, source op with block numbers folded) as
    seconds, and the dots' FLOPs per step. `seconds` maps the trace's event
    names (the executed top-level instructions) to their time over `steps`;
    a fusion that holds several dots shares its time among them."""
    instructions, callers = parse_hlo(hlo_path)
    dot_names = [name for name, inst in instructions.items() if inst["op"] == "dot"]
    executed_of = {name: callers.get(instructions[name]["computation"], name) for name in dot_names}
    dots_per_executed = collections.Counter(executed_of.values())
    dots = collections.defaultdict(lambda: [0, 0, 0.0])
    total_flops = 0
    for name in dot_names:
        inst = instructions[name]
        lhs, rhs = (instructions[o]["dims"] for o in inst["operands"][:2])
        contracting = _dims_attribute(inst["attributes"], "lhs_contracting_dims")
        flops = 2 * int(np.prod(inst["dims"])) * int(np.prod([lhs[d] for d in contracting]))
        executed = executed_of[name]
        key = (tuple(lhs), tuple(rhs), tuple(contracting),
               tuple(_dims_attribute(inst["attributes"], "rhs_contracting_dims")),
               "lhs_batch_dims" in inst["attributes"])
        row = dots[key]
        row[0] += 1
        row[1] += flops
        row[2] += seconds.get(executed, 0.0) / steps / dots_per_executed[executed]
        total_flops += flops
    others = collections.Counter()
    for name, value in seconds.items():
        if name in dots_per_executed or name not in instructions:
            continue
        source = re.sub(r"block_\d+", "block_N", instructions[name]["source"])
        source = re.sub(r"^jit\(train_step\)/", "", source)
        others[(op_kind(name), source or "?")] += value / steps
    return dots, others, total_flops


def print_hlo_breakdown(hlo_path, seconds, model):
    """Prints `hlo_breakdown`'s tables (see the module docstring)."""
    from keras_ccmim import flops as flop_model

    dots, others, dot_flops = hlo_breakdown(hlo_path, seconds, FLAGS.steps)
    dot_seconds = sum(row[2] for row in dots.values())
    per_image = dot_flops / FLAGS.batch_size
    expected = flop_model.model_step_flops(model).step
    print(f"\ndots: {sum(r[0] for r in dots.values())} per step, {dot_flops / 1e9:.2f} GFLOP, "
          f"{1e3 * dot_seconds:.1f} ms, {dot_flops / max(dot_seconds, 1e-12) / 1e9:.0f} GFLOP/s; "
          f"{per_image / 1e6:.1f} MFLOP per image against keras_ccmim.flops' "
          f"{expected / 1e6:.1f} (ratio {per_image / expected:.3f})")
    print("| lhs | rhs | contracting (lhs; rhs) | batched | count | GFLOP | ms | GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for key, (count, flops, secs) in sorted(dots.items(), key=lambda kv: -kv[1][2])[:FLAGS.top]:
        lhs, rhs, lc, rc, batched = key
        rate = f"{flops / secs / 1e9:.0f}" if secs else "-"
        print(f"| {list(lhs)} | {list(rhs)} | {list(lc)}; {list(rc)} | {'yes' if batched else 'no'} "
              f"| {count} | {flops / 1e9:.2f} | {1e3 * secs:.1f} | {rate} |")
    print(f"\nother ops: {1e3 * sum(others.values()):.1f} ms per step")
    print("| op kind | source op | ms per step |")
    print("| --- | --- | --- |")
    for (kind, source), secs in others.most_common(FLAGS.top):
        print(f"| {kind} | {source[:100]} | {1e3 * secs:.1f} |")


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
    with tempfile.TemporaryDirectory() as dump_dir:
        if FLAGS.hlo_breakdown:
            if os.environ.get("KERAS_BACKEND") == "torch":
                raise app.UsageError("--hlo_breakdown needs an XLA backend: KERAS_BACKEND=jax or tensorflow.")
            modules = "|".join(STEP_MODULE.values())
            os.environ["XLA_FLAGS"] += (f" --xla_dump_to={dump_dir} --xla_dump_hlo_as_text"
                                        f" --xla_dump_hlo_module_re=.*({modules}).*")
        return _profile(dump_dir)


def _profile(dump_dir):
    import keras

    from keras_ccmim import CCMIMPretrainer

    backend = keras.backend.backend()
    kwargs = dict(masking="random", contrastive="none") if FLAGS.variant == "mae" else {}
    model = library = CCMIMPretrainer.from_architecture(FLAGS.preset, **kwargs)
    height, width = model.encoder.image_size
    if FLAGS.model == "reference":
        if FLAGS.variant != "mae":
            raise app.UsageError("--model=reference is an MAE step: use --variant=mae.")
        if FLAGS.hlo_breakdown:
            raise app.UsageError("--hlo_breakdown profiles the library's step: leave out --model=reference.")
        from benchmarks.reference_mae import ReferenceMAE

        enc = model.encoder
        model = ReferenceMAE(height, enc.patch_size, enc.hidden_dim, enc.num_layers,
                             enc.num_heads, model.decoder_hidden_dim, model.decoder_num_layers,
                             model.decoder_num_heads, mask_ratio=model.mask_ratio)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4), jit_compile=backend != "torch")
    images = np.random.RandomState(0).rand(FLAGS.batch_size, height, width, 3).astype("float32")
    if backend == "torch":
        for _ in range(FLAGS.warmup_steps):
            model.train_on_batch(images)
        return profile_torch(model, images)

    from benchmarks.step_backend import Backend

    feed = Backend(backend)  # the step benchmark's batch source, for `fit`
    batch = feed.constant(images)

    def fit(steps):
        model.fit(feed.batches(batch), steps_per_epoch=steps, epochs=1, verbose=0)

    fit(FLAGS.warmup_steps)
    with tempfile.TemporaryDirectory() as logdir:
        if backend == "jax":
            import jax

            jax.profiler.start_trace(logdir)
        else:
            import tensorflow as tf

            tf.profiler.experimental.start(logdir)
        fit(FLAGS.steps)
        if backend == "jax":
            jax.profiler.stop_trace()
        else:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"The profiler wrote no trace under {logdir}.")
        seconds = op_seconds(paths[0])

    kinds = collections.Counter()
    for name, value in seconds.items():
        kinds[op_kind(name)] += value / FLAGS.steps
    print(f"{backend} {FLAGS.variant} step, batch {FLAGS.batch_size}: traced op time "
          f"{1e3 * sum(kinds.values()):.0f} ms per step")
    print_shares("| op kind | ms per step | share |", kinds)
    if FLAGS.hlo_breakdown:
        modules = sorted(glob.glob(os.path.join(dump_dir, f"*{STEP_MODULE[backend]}*after_optimizations.txt")),
                         key=os.path.getsize)
        if not modules:
            raise RuntimeError(f"XLA dumped no optimised {STEP_MODULE[backend]} module to {dump_dir}.")
        print_hlo_breakdown(modules[-1], seconds, library)
    return 0


if __name__ == "__main__":
    app.run(main)
