r"""Training-step throughput of MAE and ccMIM on each Keras backend.

For a preset (plus size overrides) and a batch size, measures the
steady-state images/s and the peak memory of the MAE step
(`masking="random", contrastive="none"`) and of the ccMIM step (defaults),
the ccMIM/MAE step-time ratio, the machine's matmul throughput, and each
step's model FLOPs/s as a fraction of it (`keras_ccmim.flops`, the spec's
FLOP model: blocks with [CLS] plus the patch embedding).

How it measures:

* Each backend runs in its own subprocess with `KERAS_BACKEND` set; TF and
  JAX train with `jit_compile=True` (`--jit_compile`).
* Training is `model.fit` on one fixed synthetic batch repeated (a constant
  `tf.data` dataset on TF, a generator yielding the same device array on JAX
  and torch), so the input pipeline is not measured.
* Each worker first measures the matmul peak (`--matmul_repeats` samples of
  a float32, then a bfloat16, `--matmul_size`^3 matmul) and builds, compiles
  and warms up (`--warmup_steps`) every variant; none of this is timed. The
  workers are set up one after the other.
* Then `--repeats` rounds. In a round every backend, one after the other (the
  order rotating), runs one `fit` of `--steps` steps per variant (the
  variants' order alternating) with a matmul sample before and after each
  fit. A fit's time runs from `on_epoch_begin` to `on_epoch_end` after its
  outputs are synchronised. Interleaving means the variants and the
  backends see the same background load on a shared machine. Reported: the
  median step time; the ccMIM/MAE ratio is the median of the per-round
  ratios; utilisation is the model FLOP/s of the median step over the
  median of all the backend's float32 matmul samples (the JSON also has
  `utilisation_load_matched`: per round, against the samples taken just
  before and after the fit).
* `--cpu_threads=N` pins every worker to N cores (and sets the backends'
  thread counts): on a machine shared with other jobs, two OpenMP threads
  that keep losing their core make torch many times slower, and one thread
  per backend gives steadier numbers. `--nointerleave_backends` runs the
  backends one after the other instead (one worker alive at a time).
* Peak memory: on CPU the process's peak RSS over the variant's timed fits
  (VmHWM, reset before each fit through `/proc/self/clear_refs`); on GPU the
  backend's allocator peak (torch and TF reset per fit; JAX's is the
  process lifetime peak). Both models live in the one process, so each
  number includes the other model's weights and optimizer state
  (`state_mb` in the JSON gives their size).
* Recompilation: the Python `train_step` runs only while TF or JAX trace it,
  so its call count after warm-up must not change during the timed fits
  (`retraces` in the JSON; torch runs it eagerly every step).
* Backend-specific paths: a variant `mae-keras_layer_norm` (or
  `ccmim-keras_layer_norm`) is the step with Keras' own LayerNorm in place of
  the library's JAX-on-CPU one (`keras_ccmim.backend_specific`), built,
  traced and timed in the same rounds as the library's step; printed as its
  step time over the library's, wall clock and the process's CPU time (with
  `--cpu_threads=1` the CPU time of a step hardly moves with the load of
  other jobs, its wall time does).
* Fused attention: on torch a profiled step lists the
  `scaled_dot_product_attention` kernels it ran; with `--xla_dump` the
  compiled XLA programs of TF and JAX are searched for cuDNN fused-attention
  calls (GPU only; XLA on CPU has no fused attention kernel).

Typical runs:

    # tiny32 (the default preset), batch 128, all backends, ~10 min on 2 cores
    python -m benchmarks.step_throughput --output=/tmp/tiny32.json

    # ViT-B proportions on CPU (14x14 patches, half width and depth)
    python -m benchmarks.step_throughput --preset=vit_base_patch16_224 \
        --image_size=112 --patch_size=8 --hidden_dim=384 --num_layers=6 \
        --num_heads=6 --decoder_hidden_dim=256 --decoder_num_layers=4 \
        --decoder_num_heads=8 --batch_size=32

    # does the JAX-on-CPU LayerNorm still pay? (docs/performance/cpu_investigation.md)
    KERAS_BACKEND=jax python -m benchmarks.step_throughput --backends=jax \
        --variants=mae,mae-keras_layer_norm --cpu_threads=1 --steps=3 --repeats=9

`benchmarks/gpu_run.py` runs it on a GPU at ViT-B/16, bfloat16, with the rest of a GPU check.
"""

import json
import os
import signal
import sys
import tempfile

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.hardware import machine_info  # noqa: E402
from benchmarks.step_backend import BACKENDS  # noqa: E402
from benchmarks.step_models import CALLBACK_ARMS, VARIANTS, check_variant  # noqa: E402
from benchmarks.step_parent import kill_workers, run_backends  # noqa: E402
from benchmarks.step_report import print_table, summarize  # noqa: E402
from benchmarks.step_worker import worker_main  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Model preset (keras_ccmim.models.presets).")
flags.DEFINE_integer("image_size", None, "Override: image size.")
flags.DEFINE_integer("patch_size", None, "Override: patch size.")
flags.DEFINE_integer("hidden_dim", None, "Override: encoder width.")
flags.DEFINE_integer("num_layers", None, "Override: encoder blocks.")
flags.DEFINE_integer("num_heads", None, "Override: encoder heads.")
flags.DEFINE_float("mlp_ratio", None, "Override: MLP ratio.")
flags.DEFINE_integer("decoder_hidden_dim", None, "Override: decoder width.")
flags.DEFINE_integer("decoder_num_layers", None, "Override: decoder blocks.")
flags.DEFINE_integer("decoder_num_heads", None, "Override: decoder heads.")
flags.DEFINE_integer("batch_size", 128, "Global batch size.")
flags.DEFINE_list("backends", list(BACKENDS), "Backends to run, each in its own subprocess.")
flags.DEFINE_list(
    "variants", list(VARIANTS),
    "Steps to time: mae, ccmim; `<step>-keras_layer_norm` is the step with Keras' own "
    "LayerNorm in place of the library's JAX-on-CPU one, timed in the same rounds.")
flags.DEFINE_integer("warmup_steps", 2, "Steps after compilation before timing.")
flags.DEFINE_integer("steps", 2, "Steps per timed fit (one repeat).")
flags.DEFINE_integer("repeats", 5, "Timed rounds; the reported time is the median.")
flags.DEFINE_integer(
    "steps_per_execution", 1, "Keras steps_per_execution (TF and JAX; torch supports only 1)."
)
flags.DEFINE_list(
    "callback_arms", ["none"],
    "Callbacks each timed fit runs, every arm in every round: none; run (the main job's "
    "callbacks with the default intervals: NaN guard, learning-rate and CSV logs, "
    "TensorBoard scalars, checkpoints at epoch ends); every_step (the same, reading the "
    "loss after every step, as they did before check_every_steps).",
)
flags.DEFINE_boolean(
    "compare_reference", False,
    "Also time a plain-Keras MAE written without the library (benchmarks/reference_mae.py), "
    "the same shapes as the MAE step: a fixed yardstick across machines and releases.")
flags.DEFINE_boolean("jit_compile", True, "XLA-compile the TF and JAX steps.")
flags.DEFINE_boolean(
    "torch_compile", False,
    "torch: fit with jit_compile=True (torch.compile of the train step); its compile time is in "
    "`warmup_seconds`, and a second run reuses TorchInductor's on-disk cache.")
flags.DEFINE_enum(
    "dtype_policy", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
    "Keras dtype policy of the models.",
)
flags.DEFINE_integer("matmul_size", 2048, "Side of the square matmul that measures the peak.")
flags.DEFINE_integer("matmul_inner", 1, "Matmuls per timed sample (raise on a GPU).")
flags.DEFINE_integer(
    "matmul_repeats", 10, "Matmul samples before the rounds (plus one before and after each fit)."
)
flags.DEFINE_integer(
    "cpu_threads", 0, "Pin each backend's process to this many cores (0: all)."
)
flags.DEFINE_boolean(
    "interleave_backends", True,
    "Alternate the backends round by round (all workers stay alive); off: one "
    "backend after the other (one worker at a time, e.g. to keep GPU memory free).",
)
flags.DEFINE_boolean("require_gpu", False, "Fail unless every backend sees a GPU.")
flags.DEFINE_boolean("xla_dump", False, "Dump TF/JAX XLA programs and look for fused attention.")
flags.DEFINE_string("output", None, "Write the results as JSON here.")
flags.DEFINE_string("reprint", None, "Print the table of a JSON written by --output; run nothing.")
flags.DEFINE_integer(
    "worker_timeout", 3600, "Seconds of work (setup, rounds, checks) before a backend's worker is killed."
)
flags.DEFINE_list(
    "backend_timeouts", [], "Per-backend --worker_timeout overrides, e.g. tensorflow=200,torch=100."
)
# Internal: the parent runs each backend as `--worker_backend=... --worker_output=...`.
flags.DEFINE_string("worker_backend", None, "Internal: run one backend in this process.")
flags.DEFINE_string("worker_output", None, "Internal: where the worker writes its JSON.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.worker_backend:
        worker_main(FLAGS.worker_backend, FLAGS.worker_output)
        return 0
    if FLAGS.reprint:
        with open(FLAGS.reprint) as f:
            report = json.load(f)
        FLAGS.dtype_policy = report["dtype_policy"]
        FLAGS.variants = list(report["results"][0].get("variants", FLAGS.variants))
        print(report["command"])
        print_table(report["results"], summarize(report["results"]), report.get("machine"))
        return 0
    for arm in FLAGS.callback_arms:
        if arm not in CALLBACK_ARMS:
            raise app.UsageError(
                f"Unknown callback arm {arm!r}; choose from {', '.join(CALLBACK_ARMS)}.")
    for variant in FLAGS.variants:
        if check_variant(variant):
            print(f"Error: --variants: {check_variant(variant)}.", file=sys.stderr)
            return 2
    for backend in FLAGS.backends:
        if backend not in BACKENDS:
            raise app.UsageError(f"Unknown backend {backend!r}; choose from {', '.join(BACKENDS)}.")
    signal.signal(signal.SIGTERM, kill_workers)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results = run_backends(tmp)
        finally:
            kill_workers()
    for result in results:
        if "error" in result:
            print(f"[step_throughput] {result['backend']} failed: {result['error']}\n"
                  f"{result.get('log_tail', '')}", flush=True)
    summary = summarize(results)
    report = {
        "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "preset": FLAGS.preset,
        "batch_size": FLAGS.batch_size,
        "dtype_policy": FLAGS.dtype_policy,
        "machine": machine_info(),
        "results": results,
        "summary": summary,
    }
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=1)
    print_table(results, summary, report["machine"])
    if any("error" in r for r in results):
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
