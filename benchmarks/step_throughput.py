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
* Fused attention: on torch a profiled step lists the
  `scaled_dot_product_attention` kernels it ran; with `--xla_dump` the
  compiled XLA programs of TF and JAX are searched for cuDNN fused-attention
  calls (GPU only; XLA on CPU has no fused attention kernel).

Typical runs:

    # tiny32 (the default preset), batch 128, all backends, ~10 min on 2 cores
    python benchmarks/step_throughput.py --output=/tmp/tiny32.json

    # ViT-B proportions on CPU (14x14 patches, half width and depth)
    python benchmarks/step_throughput.py --preset=vit_base_patch16_224 \
        --image_size=112 --patch_size=8 --hidden_dim=384 --num_layers=6 \
        --num_heads=6 --decoder_hidden_dim=256 --decoder_num_layers=4 \
        --decoder_num_heads=8 --batch_size=32

`benchmarks/gpu_check.sh` runs it on a GPU at ViT-B/16, bfloat16.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BACKENDS = ("tensorflow", "jax", "torch")
VARIANTS = {
    "mae": dict(masking="random", contrastive="none"),
    "ccmim": dict(),  # the defaults: importance sampling + InfoNCE
}
SIZE_FLAGS = ("image_size", "patch_size", "hidden_dim", "num_layers", "num_heads", "mlp_ratio")
DECODER_FLAGS = ("decoder_hidden_dim", "decoder_num_layers", "decoder_num_heads")

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
flags.DEFINE_list("variants", list(VARIANTS), "Steps to time: mae, ccmim.")
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
flags.DEFINE_boolean("jit_compile", True, "XLA-compile the TF and JAX steps.")
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


# -- helpers that run inside a backend's process --------------------------------


def _median(values):
    return statistics.median(values) if values else None


def _rss_kib(field):
    """A `VmRSS`/`VmHWM` value (KiB) from /proc/self/status, or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Backend:
    """The few backend-specific operations the benchmark needs."""

    def __init__(self, name):
        self.name = name
        if name == "tensorflow":
            import tensorflow as tf

            self.tf = tf
            gpus = tf.config.list_physical_devices("GPU")
            for gpu in gpus:
                tf.config.experimental.set_memory_growth(gpu, True)
            self.gpu = bool(gpus)
        elif name == "jax":
            import jax

            self.jax = jax
            self.gpu = jax.devices()[0].platform == "gpu"
        elif name == "torch":
            import torch

            self.torch = torch
            self.gpu = torch.cuda.is_available()
        else:
            raise ValueError(f"Unknown backend {name!r}; choose from {', '.join(BACKENDS)}.")

    def device_name(self):
        if self.name == "tensorflow":
            gpus = self.tf.config.list_physical_devices("GPU")
            if gpus:
                details = self.tf.config.experimental.get_device_details(gpus[0])
                return details.get("device_name", gpus[0].name)
            return "cpu"
        if self.name == "jax":
            device = self.jax.devices()[0]
            return getattr(device, "device_kind", device.platform)
        if self.gpu:
            return self.torch.cuda.get_device_name(0)
        return "cpu"

    def sync(self, value=None):
        """Block until all queued work (and `value`) is done."""
        if self.name == "jax":
            if value is not None:
                self.jax.block_until_ready(value)
        elif self.name == "torch":
            if self.gpu:
                self.torch.cuda.synchronize()
        elif value is not None:
            import numpy as np

            np.asarray(value)  # TF: reading a value waits for it

    def constant(self, array):
        """`array` as a device tensor of this backend."""
        if self.name == "jax":
            return self.jax.device_put(array)
        if self.name == "torch":
            return self.torch.from_numpy(array).to("cuda" if self.gpu else "cpu")
        return self.tf.constant(array)

    def batches(self, images):
        """A fresh infinite source of the same batch, for `fit`."""
        if self.name == "tensorflow":
            return self.tf.data.Dataset.from_tensors(images).repeat()

        def forever():
            while True:
                yield (images,)

        return forever()

    def matmul_fn(self, dtype, size, inner):
        """`(fn, args)`: `fn(*args)` runs `inner` dependent matmuls."""
        import numpy as np

        rng = np.random.RandomState(0)
        a = (rng.rand(size, size).astype("float32") - 0.5) / size**0.5
        if self.name == "tensorflow":
            tf = self.tf
            device = "/GPU:0" if self.gpu else "/CPU:0"
            with tf.device(device):
                x = tf.cast(tf.constant(a), dtype)

            @tf.function(jit_compile=True)
            def fn(x):
                y = x
                for _ in range(inner):
                    y = tf.matmul(y, x)
                return tf.cast(y[0, 0], "float32")

            return fn, (x,)
        if self.name == "jax":
            jnp = self.jax.numpy
            x = self.jax.device_put(jnp.asarray(a, dtype=dtype))

            @self.jax.jit
            def fn(x):
                y = x
                for _ in range(inner):
                    y = y @ x
                return y[0, 0].astype("float32")

            return fn, (x,)
        torch = self.torch
        x = torch.from_numpy(a).to("cuda" if self.gpu else "cpu", getattr(torch, dtype))

        def fn(x):
            y = x
            for _ in range(inner):
                y = y @ x
            return y[0, 0]

        return fn, (x,)

    def reset_memory(self):
        _reset_peak_rss()
        if self.gpu and self.name == "torch":
            self.torch.cuda.reset_peak_memory_stats()
        elif self.gpu and self.name == "tensorflow":
            self.tf.config.experimental.reset_memory_stats("GPU:0")

    def peak_memory(self):
        """`{"rss_mb", "gpu_mb"}` peaks since the last `reset_memory`."""
        hwm = _rss_kib("VmHWM")
        out = {"rss_mb": None if hwm is None else hwm / 1024, "gpu_mb": None}
        if self.gpu:
            if self.name == "torch":
                out["gpu_mb"] = self.torch.cuda.max_memory_allocated() / 2**20
            elif self.name == "tensorflow":
                out["gpu_mb"] = self.tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
            else:
                stats = self.jax.devices()[0].memory_stats() or {}
                if "peak_bytes_in_use" in stats:
                    out["gpu_mb"] = stats["peak_bytes_in_use"] / 2**20
        return out


def measure_matmul(backend, dtype, size, inner, samples):
    """Median FLOP/s of `inner` chained `size`^3 matmuls, or None if unsupported."""
    try:
        fn, args = backend.matmul_fn(dtype, size, inner)
        backend.sync(fn(*args))
        backend.sync(fn(*args))
    except Exception as e:  # noqa: BLE001 - a dtype the backend lacks
        return None, f"{type(e).__name__}: {e}"[:200]
    flops = 2.0 * size**3 * inner
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        backend.sync(fn(*args))
        times.append(time.perf_counter() - start)
    return [flops / t for t in times], None


def _fused_attention_ops_torch(model, images):
    """Names of the attention kernels a torch training step runs."""
    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        model.train_on_batch(images)
    return sorted(
        {e.key for e in prof.key_averages() if e.key.startswith("aten::") and "attention" in e.key}
    )


def _fused_attention_in_xla_dump(directory):
    """cuDNN fused-attention custom calls found in dumped XLA programs."""
    found = set()
    if not directory or not os.path.isdir(directory):
        return []
    for name in os.listdir(directory):
        if not name.endswith(".txt") or "after_optimizations" not in name:
            continue
        with open(os.path.join(directory, name), errors="ignore") as f:
            for line in f:
                if "custom_call_target=" in line and ("fmha" in line or "flash" in line.lower()):
                    target = line.split('custom_call_target="', 1)[1].split('"', 1)[0]
                    found.add(target)
    return sorted(found)


def build_model(variant):
    from keras_ccmim import CCMIMPretrainer

    encoder_overrides = {k: getattr(FLAGS, k) for k in SIZE_FLAGS if getattr(FLAGS, k) is not None}
    decoder = {k: getattr(FLAGS, k) for k in DECODER_FLAGS if getattr(FLAGS, k) is not None}
    return CCMIMPretrainer.from_preset(
        FLAGS.preset,
        encoder_overrides=encoder_overrides,
        seed=0,
        **decoder,
        **VARIANTS[variant],
    )


class _FitTimer:
    """Times each `fit` epoch and records its peak memory."""

    def __init__(self, backend, model):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                backend.reset_memory()
                outer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                for value in (logs or {}).values():
                    float(value)  # waits for the step's outputs
                if backend.name == "jax":
                    backend.sync(model.trainable_variables[0].value)
                else:
                    backend.sync()
                outer.seconds = time.perf_counter() - outer.start
                outer.memory = backend.peak_memory()

        self.callback = Callback()
        self.start = self.seconds = self.memory = None


CALLBACK_ARMS = ("none", "run", "every_step")


def _arm_callbacks(arm, model, folder, steps):
    """The callbacks a timed fit of `arm` runs besides the timer (see
    --callback_arms), writing under `folder`."""
    if arm == "none":
        return []
    from keras_ccmim.training import callbacks as run_callbacks
    from keras_ccmim.training.config import PretrainConfig

    os.makedirs(folder, exist_ok=True)
    defaults = PretrainConfig()
    every = 1 if arm == "every_step" else defaults.check_every_steps
    board = 1 if arm == "every_step" else defaults.tensorboard_every_steps
    checkpoint = run_callbacks.TrainingCheckpoint(
        os.path.join(folder, "checkpoints"), steps, check_every_steps=every,
        max_to_keep=1,
    )
    return [
        run_callbacks.StopOnNonFiniteLoss(checkpoint=checkpoint, check_every_steps=every),
        run_callbacks.LogLearningRate(),
        run_callbacks.MetricsCSV(os.path.join(folder, "metrics.csv")),
        run_callbacks.TensorBoardScalars(os.path.join(folder, "tensorboard"), update_freq=board),
        checkpoint,
    ]


def _count_traces(model):
    """Wrap `model.train_step` so that its Python calls are counted."""
    counter = {"calls": 0}
    step = model.train_step

    def counted(*args, **kwargs):
        counter["calls"] += 1
        return step(*args, **kwargs)

    model.train_step = counted
    return counter


class Worker:
    """One backend's models, timed round by round on the parent's command."""

    def __init__(self, backend_name):
        import keras
        import numpy as np

        self.np = np
        self.keras = keras
        self.backend = Backend(backend_name)
        self.result = {
            "backend": backend_name,
            "keras": keras.__version__,
            "device": self.backend.device_name(),
            "gpu": self.backend.gpu,
            "cpu_count": os.cpu_count(),
            "cpu_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        }
        self.models, self.timers, self.counters, self.records = {}, {}, {}, {}
        self.arm_callbacks = {}
        self.per_round = []
        self.matmul_samples = []

    def setup(self):
        """Measure the matmul peak, build, compile and warm up every variant."""
        from keras_ccmim import flops as flop_model

        backend, keras, np = self.backend, self.keras, self.np
        if FLAGS.require_gpu and not backend.gpu:
            raise RuntimeError(f"{backend.name} sees no GPU (--require_gpu).")
        keras.mixed_precision.set_global_policy(FLAGS.dtype_policy)
        keras.utils.set_random_seed(0)

        size, inner = FLAGS.matmul_size, FLAGS.matmul_inner
        fp32, fp32_error = measure_matmul(backend, "float32", size, inner, FLAGS.matmul_repeats)
        bf16, bf16_error = measure_matmul(backend, "bfloat16", size, inner, FLAGS.matmul_repeats)
        self.matmul_samples = list(fp32 or [])
        self.bf16_samples = bf16
        self.result["matmul"] = {
            "size": size,
            "inner": inner,
            "float32_error": fp32_error,
            "bfloat16_gflops": None if bf16 is None else _median(bf16) / 1e9,
            "bfloat16_error": bf16_error,
        }
        self.matmul = None if fp32 is None else backend.matmul_fn("float32", size, inner)

        name = backend.name
        self.spe = 1 if name == "torch" else FLAGS.steps_per_execution
        self.steps = max(FLAGS.steps, self.spe) // self.spe * self.spe
        warmup = max(FLAGS.warmup_steps, self.spe) // self.spe * self.spe
        self.images = None
        for variant in FLAGS.variants:
            model = build_model(variant)
            if self.images is None:
                h, w = model.encoder.image_size
                shape = (FLAGS.batch_size, h, w, model.encoder.num_channels)
                self.images = backend.constant(
                    np.random.RandomState(0).randn(*shape).astype("float32")
                )
            lr = 1.5e-4 * FLAGS.batch_size / 256
            model.compile(
                optimizer=keras.optimizers.AdamW(lr, beta_1=0.9, beta_2=0.95, weight_decay=0.05),
                jit_compile=FLAGS.jit_compile if name != "torch" else False,
                steps_per_execution=self.spe,
            )
            self.counters[variant] = _count_traces(model)
            self.timers[variant] = _FitTimer(backend, model)
            start = time.perf_counter()
            self._fit(model, self.timers[variant], warmup)
            step_flops = flop_model.model_step_flops(model)
            state = sum(int(np.prod(v.shape)) * 4 for v in model.variables)
            state += sum(int(np.prod(v.shape)) * 4 for v in model.optimizer.variables)
            enc = model.encoder
            self.records[variant] = {
                "config": {
                    "masking": model.masking,
                    "contrastive": model.contrastive,
                    "image_size": list(enc.image_size),
                    "patch_size": enc.patch_size,
                    "hidden_dim": enc.hidden_dim,
                    "num_layers": enc.num_layers,
                    "num_heads": enc.num_heads,
                    "decoder_hidden_dim": model.decoder_hidden_dim,
                    "decoder_num_layers": model.decoder_num_layers,
                    "decoder_num_heads": model.decoder_num_heads,
                    "parameters": int(model.count_params()),
                },
                "warmup_seconds": time.perf_counter() - start,
                "traces_after_warmup": self.counters[variant]["calls"],
                "flops_per_image": step_flops.step,
                "flop_model": step_flops.as_dict(),
                "state_mb": state / 2**20,
                "step_seconds": [],
                "round_utilisation": [],
                "memory": [],
            }
            self.models[variant] = model
            for _, callbacks in self._arms(variant):  # their first calls trace and open files
                self._fit(model, self.timers[variant], warmup, callbacks)

    def _fit(self, model, timer, steps, callbacks=()):
        # The timer first: its epoch end (the end of the timed span) runs
        # before the epoch-end work of the others (checkpoint, logs).
        model.fit(self.backend.batches(self.images), steps_per_epoch=steps, epochs=1,
                  verbose=0, shuffle=False, callbacks=[timer.callback, *callbacks])

    def _arms(self, variant):
        """`(arm, callbacks)` of every callback arm but "none", built once."""
        if variant not in self.arm_callbacks:
            if not hasattr(self, "_arm_folder"):  # removed when the worker exits
                self._arm_folder = tempfile.TemporaryDirectory(prefix="step_throughput-")
            self.arm_callbacks[variant] = [
                (arm, _arm_callbacks(
                    arm, self.models[variant],
                    os.path.join(self._arm_folder.name, f"{variant}-{arm}"), self.steps))
                for arm in FLAGS.callback_arms if arm != "none"
            ]
        return self.arm_callbacks[variant]

    def _matmul_sample(self):
        if self.matmul is None:
            return None
        fn, args = self.matmul
        self.backend.sync()
        start = time.perf_counter()
        self.backend.sync(fn(*args))
        rate = 2.0 * FLAGS.matmul_size**3 * FLAGS.matmul_inner / (time.perf_counter() - start)
        self.matmul_samples.append(rate)
        return rate

    def run_round(self, index):
        """Each variant once (order alternating), a matmul sample around each."""
        order = list(FLAGS.variants)
        if index % 2:
            order.reverse()
        times = {}
        before = self._matmul_sample()
        for variant in order:
            timer, record = self.timers[variant], self.records[variant]
            arms = self._arms(variant)
            if index % 2:
                arms = arms[::-1]
            if arms and index % 2:  # the arms' order alternates around the bare fit
                self._timed_arms(variant, arms, times)
            self._fit(self.models[variant], timer, self.steps)
            times[variant] = timer.seconds / self.steps
            if arms and not index % 2:
                self._timed_arms(variant, arms, times)
            after = self._matmul_sample()
            record["step_seconds"].append(times[variant])
            record["memory"].append(timer.memory)
            if before and after and FLAGS.dtype_policy == "float32":
                achieved = record["flops_per_image"] * FLAGS.batch_size / times[variant]
                record["round_utilisation"].append(achieved / ((before + after) / 2))
            before = after
        self.per_round.append(times)

    def _timed_arms(self, variant, arms, times):
        timer, record = self.timers[variant], self.records[variant]
        for arm, callbacks in arms:
            self._fit(self.models[variant], timer, self.steps, callbacks)
            seconds = timer.seconds / self.steps
            record.setdefault("arm_step_seconds", {}).setdefault(arm, []).append(seconds)
            times[f"{variant}+{arm}"] = seconds

    def finish(self):
        result, records = self.result, self.records
        fp32_peak = _median(self.matmul_samples)
        result["matmul"]["float32_gflops"] = None if fp32_peak is None else fp32_peak / 1e9
        result["matmul"]["float32_samples"] = len(self.matmul_samples)
        low_precision = FLAGS.dtype_policy != "float32"
        peak = (self.bf16_samples and _median(self.bf16_samples)) if low_precision else fp32_peak
        for variant, record in records.items():
            seconds = _median(record["step_seconds"])
            record["median_step_seconds"] = seconds
            record["images_per_second"] = FLAGS.batch_size / seconds
            rate = record["flops_per_image"] * FLAGS.batch_size / seconds
            record["model_gflops_per_second"] = rate / 1e9
            record["utilisation"] = rate / peak if peak else None
            # Against the matmul samples taken just before and after each fit
            # (the same background load); unreliable on TF, whose matmul right
            # after a fit runs slow.
            record["utilisation_load_matched"] = _median(record["round_utilisation"])
            record["peak_rss_mb"] = max((m["rss_mb"] or 0) for m in record["memory"]) or None
            gpu = [m["gpu_mb"] for m in record["memory"] if m["gpu_mb"] is not None]
            record["peak_gpu_mb"] = max(gpu) if gpu else None
            record["retraces"] = self.counters[variant]["calls"] - record["traces_after_warmup"]
            if self.backend.name == "torch":
                record["retraces"] = None  # eager: train_step runs every step
        for variant, record in records.items():
            record["callbacks_to_none"] = {
                arm: _median([r[f"{variant}+{arm}"] / r[variant] for r in self.per_round])
                for arm in record.get("arm_step_seconds", {})
            }
        result["variants"] = records
        if "mae" in records and "ccmim" in records:
            ratios = [r["ccmim"] / r["mae"] for r in self.per_round]
            result["ccmim_to_mae"] = {
                "median_of_round_ratios": _median(ratios),
                "round_ratios": ratios,
                "ratio_of_medians": records["ccmim"]["median_step_seconds"]
                / records["mae"]["median_step_seconds"],
                "flop_floor": records["ccmim"]["flops_per_image"] / records["mae"]["flops_per_image"],
            }
        result["reference_peak_dtype"] = "bfloat16" if low_precision else "float32"
        result["steps_per_execution"] = self.spe
        result["steps_per_fit"] = self.steps
        result["rss_mb_at_end"] = (_rss_kib("VmRSS") or 0) / 1024 or None
        # Checks on the ccMIM step (after timing: profiling costs time).
        check_model = self.models.get("ccmim") or next(iter(self.models.values()))
        if self.backend.name == "torch":
            result["attention_kernels"] = _fused_attention_ops_torch(check_model, self.images)
        elif not self.backend.gpu:
            result["attention_kernels"] = "XLA:CPU (no fused attention kernel exists there)"
        elif FLAGS.xla_dump:
            result["attention_kernels"] = _fused_attention_in_xla_dump(
                os.environ.get("_BENCH_XLA_DUMP")
            ) or "no cuDNN fused attention found in the XLA dump"
        return result


_TOKEN = "@@step_throughput"


def _limit_cpu_threads(count):
    """Restrict this process (and so every backend's thread pools) to `count` cores."""
    if not count:
        return
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores[:count])
    os.environ["OMP_NUM_THREADS"] = str(count)
    if count == 1 and os.environ.get("KERAS_BACKEND") == "jax":
        flags_ = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags_).strip()
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch

        torch.set_num_threads(count)
        torch.set_num_interop_threads(count)
    elif os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(count)
        tf.config.threading.set_inter_op_parallelism_threads(count)


def worker_main(backend_name, output_path):
    """Serve the parent: setup, then one round per `round` line, then write JSON."""
    _limit_cpu_threads(FLAGS.cpu_threads)
    result = {"backend": backend_name}
    try:
        worker = Worker(backend_name)
        result = worker.result
        worker.setup()
        print(_TOKEN, "ready", flush=True)
        for line in sys.stdin:
            command = line.split()
            if command and command[0] == "round":
                worker.run_round(int(command[1]))
                print(_TOKEN, "done", flush=True)
            elif command and command[0] == "finish":
                break
        result = worker.finish()
    except Exception as e:  # noqa: BLE001 - reported to the parent in the JSON
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    with open(output_path, "w") as f:
        json.dump(result, f, indent=1)
    print(_TOKEN, "exit", flush=True)


# -- the parent: one subprocess per backend, rounds interleaved, then the table ----


def _worker_argv(backend, output):
    argv = [sys.executable, os.path.abspath(__file__)]
    for name in FLAGS:
        flag = FLAGS[name]
        if flag.present and name not in (
            "worker_backend", "worker_output", "backends", "output", "backend_timeouts"
        ):
            argv.append(flag.serialize())
    argv += [f"--worker_backend={backend}", f"--worker_output={output}"]
    return argv


_LIVE_WORKERS = []


def _kill_workers(*_):
    """Kill every worker still running (on exit, or when the parent is killed)."""
    for worker in _LIVE_WORKERS:
        if worker.proc.poll() is None:
            worker.proc.kill()
    if _:
        sys.exit(1)


class WorkerProcess:
    """The parent's handle on one backend's worker subprocess."""

    def __init__(self, backend, tmp):
        self.backend = backend
        self.output = os.path.join(tmp, f"{backend}.json")
        self.log_path = os.path.join(tmp, f"{backend}.log")
        env = dict(os.environ, KERAS_BACKEND=backend)
        if FLAGS.xla_dump and backend in ("tensorflow", "jax"):
            dump = os.path.join(tmp, f"xla_{backend}")
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump}").strip()
            env["_BENCH_XLA_DUMP"] = dump
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            _worker_argv(backend, self.output), env=env, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        _LIVE_WORKERS.append(self)
        self.busy_seconds = 0.0
        self.error = None
        overrides = dict(item.split("=", 1) for item in FLAGS.backend_timeouts)
        self.timeout = float(overrides.get(backend, FLAGS.worker_timeout))

    def _wait(self, token):
        """Wait for `token` from the worker within its remaining time budget."""
        import select

        start = time.perf_counter()
        while True:
            remaining = self.timeout - self.busy_seconds - (time.perf_counter() - start)
            if remaining <= 0:
                self.busy_seconds += time.perf_counter() - start
                self.kill(f"timed out after {self.timeout:.0f} s of work")
                return False
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 5.0))
            if not ready:
                continue
            line = self.proc.stdout.readline()
            if not line:  # the worker exited
                self.busy_seconds += time.perf_counter() - start
                return token == "exit"
            words = line.split()
            if words[:1] == [_TOKEN]:
                self.busy_seconds += time.perf_counter() - start
                if words[1] == token:
                    return True
                if words[1] == "exit":
                    return False

    def send(self, command, token):
        if self.error or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError:
            return False
        return self._wait(token)

    def kill(self, reason):
        self.error = reason
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def result(self):
        if self.proc.poll() is None and not self.error:
            self.send("finish", "exit")
            try:
                self.proc.wait(timeout=max(30, self.timeout - self.busy_seconds))
            except subprocess.TimeoutExpired:
                self.kill("timed out while finishing")
        self.log.close()
        result = {"backend": self.backend}
        if os.path.exists(self.output):
            with open(self.output) as f:
                result = json.load(f)
        if self.error:
            result["error"] = self.error
        elif "error" not in result and self.proc.returncode:
            result["error"] = f"exit code {self.proc.returncode}"
        if "error" in result:
            with open(self.log_path, errors="ignore") as f:
                result["log_tail"] = f.read()[-3000:]
        result["busy_seconds"] = self.busy_seconds
        return result


def run_backends(tmp):
    """Set the workers up one at a time, then run their rounds interleaved."""
    if not FLAGS.interleave_backends:
        results = []
        for backend in FLAGS.backends:
            results += _run_rounds(_start_workers([backend], tmp))
        return results
    return _run_rounds(_start_workers(FLAGS.backends, tmp))


def _start_workers(backends, tmp):
    workers = []
    for backend in backends:
        print(f"[step_throughput] {backend}: building, compiling, warming up ...", flush=True)
        worker = WorkerProcess(backend, tmp)
        if not worker._wait("ready") and not worker.error:
            worker.error = "failed during setup"
        workers.append(worker)
    return workers


def _run_rounds(workers):
    live = [w for w in workers if not w.error]
    for index in range(FLAGS.repeats):
        names = ",".join(w.backend for w in live)
        print(f"[step_throughput] round {index + 1}/{FLAGS.repeats} ({names})", flush=True)
        # Rotate the backends' order so none always runs first in a round.
        shift = index % max(len(live), 1)
        for worker in live[shift:] + live[:shift]:
            if not worker.error and not worker.send(f"round {index}", "done"):
                worker.error = worker.error or "failed during a round"
    return [w.result() for w in workers]


def _pct(record):
    value = record.get("utilisation")
    return "-" if value is None else f"{100 * value:.0f}%"


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def summarize(results):
    """Cross-backend comparisons: speeds relative to the best, utilisation of
    the machine's matmul peak (the best backend's float32 matmul)."""
    ok = {r["backend"]: r for r in results if "error" not in r and r.get("variants")}
    summary = {}
    if not ok:
        return summary
    peaks = [r["matmul"].get("float32_gflops") for r in ok.values()]
    peaks = [p for p in peaks if p]
    if peaks and FLAGS.dtype_policy == "float32":
        summary["machine_fp32_matmul_gflops"] = max(peaks)
    for variant in FLAGS.variants:
        rates = {b: r["variants"][variant]["images_per_second"]
                 for b, r in ok.items() if variant in r["variants"]}
        if not rates:
            continue
        best = max(rates, key=rates.get)
        summary[f"best_{variant}_backend"] = best
        summary[f"{variant}_time_vs_best"] = {b: rates[best] / v for b, v in rates.items()}
        if "machine_fp32_matmul_gflops" in summary:
            summary[f"{variant}_utilisation_of_machine_peak"] = {
                b: r["variants"][variant]["model_gflops_per_second"]
                / summary["machine_fp32_matmul_gflops"]
                for b, r in ok.items() if variant in r["variants"]
            }
        if "jax" in rates and "tensorflow" in rates:
            summary[f"jax_vs_tensorflow_{variant}_time"] = rates["tensorflow"] / rates["jax"]
    return summary


def print_table(results, summary):
    header = (
        "| backend | MAE img/s | ccMIM img/s | ccMIM/MAE time | FLOP floor | MAE util | "
        "ccMIM util | fp32 matmul GFLOP/s | bf16 matmul GFLOP/s | peak mem MAE / ccMIM (MB) | "
        "retraces |"
    )
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for r in results:
        if "error" in r:
            print(f"| {r['backend']} | error: {r['error']} |")
            continue
        v = r["variants"]
        mae, cc = v.get("mae", {}), v.get("ccmim", {})
        ratio = r.get("ccmim_to_mae", {})
        mem_key = "peak_gpu_mb" if r["gpu"] else "peak_rss_mb"
        retraces = ",".join(str(x.get("retraces")) for x in (mae, cc) if x)
        print(
            f"| {r['backend']} | {_fmt(mae.get('images_per_second'), '.1f')} | "
            f"{_fmt(cc.get('images_per_second'), '.1f')} | "
            f"{_fmt(ratio.get('median_of_round_ratios'), '.2f')} | "
            f"{_fmt(ratio.get('flop_floor'), '.2f')} | "
            f"{_pct(mae)} | {_pct(cc)} | "
            f"{_fmt(r['matmul'].get('float32_gflops'), '.0f')} | "
            f"{_fmt(r['matmul'].get('bfloat16_gflops'), '.0f')} | "
            f"{_fmt(mae.get(mem_key), '.0f')} / {_fmt(cc.get(mem_key), '.0f')} | {retraces} |"
        )
    if summary:
        print()
        for key, value in summary.items():
            if isinstance(value, dict):
                unit = "x" if key.endswith("_vs_best") else ""
                value = ", ".join(f"{k} {v:.2f}{unit}" for k, v in value.items())
            elif isinstance(value, float):
                value = f"{value:.3f}"
            print(f"{key}: {value}")
    for r in results:
        for variant, record in r.get("variants", {}).items():
            for arm, ratio in record.get("callbacks_to_none", {}).items():
                seconds = _median(record["arm_step_seconds"][arm])
                print(f"{r['backend']} {variant} with the {arm!r} callbacks: "
                      f"{FLAGS.batch_size / seconds:.1f} img/s, step time "
                      f"{ratio:.3f}x that without callbacks (median of the round ratios)")
    for r in results:
        if "error" in r:
            continue
        print(f"{r['backend']}: device {r['device']}, attention kernels: "
              f"{r.get('attention_kernels', 'not checked')}")


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
        print_table(report["results"], summarize(report["results"]))
        return 0
    for arm in FLAGS.callback_arms:
        if arm not in CALLBACK_ARMS:
            raise app.UsageError(
                f"Unknown callback arm {arm!r}; choose from {', '.join(CALLBACK_ARMS)}.")
    for backend in FLAGS.backends:
        if backend not in BACKENDS:
            raise app.UsageError(f"Unknown backend {backend!r}; choose from {', '.join(BACKENDS)}.")
    signal.signal(signal.SIGTERM, _kill_workers)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            results = run_backends(tmp)
        finally:
            _kill_workers()
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
        "results": results,
        "summary": summary,
    }
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(report, f, indent=1)
    print_table(results, summary)
    if any("error" in r for r in results):
        return 1
    return 0


if __name__ == "__main__":
    app.run(main)
