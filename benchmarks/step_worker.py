"""One backend's worker process of the step benchmark: builds and warms up
every variant, then times one round per command from the parent, and writes
its results as JSON."""

import json
import os
import sys
import tempfile
import time

from absl import flags

from benchmarks.step_backend import (
    Backend, _fused_attention_in_xla_dump, _fused_attention_ops_torch, _median, _rss_kib,
    measure_matmul,
)
from benchmarks.step_models import (
    _arm_callbacks, _count_traces, _FitTimer, build_model, keras_path, split_variant,
    timed_variants,
)

FLAGS = flags.FLAGS
TOKEN = "@@step_throughput"


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
        self.per_round, self.per_round_cpu = [], []
        self.matmul_samples = []

    def setup(self):
        """Measure the matmul peak, build, compile and warm up every variant."""
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
        for variant in timed_variants():
            model, description = build_model(variant)
            if self.images is None:
                shape = (FLAGS.batch_size, *description["input_shape"])
                self.images = backend.constant(
                    np.random.RandomState(0).randn(*shape).astype("float32")
                )
            lr = 1.5e-4 * FLAGS.batch_size / 256
            model.compile(
                optimizer=keras.optimizers.AdamW(lr, beta_1=0.9, beta_2=0.95, weight_decay=0.05),
                jit_compile=FLAGS.jit_compile if name != "torch" else FLAGS.torch_compile,
                steps_per_execution=self.spe,
            )
            self.counters[variant] = _count_traces(model)
            self.timers[variant] = _FitTimer(backend, model)
            self.models[variant] = model
            start = time.perf_counter()
            self._fit(variant, warmup)
            state = sum(int(np.prod(v.shape)) * 4 for v in model.variables)
            state += sum(int(np.prod(v.shape)) * 4 for v in model.optimizer.variables)
            description["config"]["parameters"] = int(model.count_params())
            self.records[variant] = {
                **{k: v for k, v in description.items() if k != "input_shape"},
                "warmup_seconds": time.perf_counter() - start,
                "traces_after_warmup": self.counters[variant]["calls"],
                "state_mb": state / 2**20,
                "step_seconds": [],
                "cpu_step_seconds": [],
                "round_utilisation": [],
                "memory": [],
            }
            for _, callbacks in self._arms(variant):  # their first calls trace and open files
                self._fit(variant, warmup, callbacks)

    def _fit(self, variant, steps, callbacks=()):
        # The timer first: its epoch end (the end of the timed span) runs
        # before the epoch-end work of the others (checkpoint, logs).
        with keras_path(variant):
            self.models[variant].fit(
                self.backend.batches(self.images), steps_per_epoch=steps, epochs=1, verbose=0,
                shuffle=False, callbacks=[self.timers[variant].callback, *callbacks])

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
        order = timed_variants()
        if index % 2:
            order.reverse()
        times, cpu_times = {}, {}
        before = self._matmul_sample()
        for variant in order:
            timer, record = self.timers[variant], self.records[variant]
            arms = self._arms(variant)
            if index % 2:
                arms = arms[::-1]
            if arms and index % 2:  # the arms' order alternates around the bare fit
                self._timed_arms(variant, arms, times)
            self._fit(variant, self.steps)
            times[variant] = timer.seconds / self.steps
            cpu_times[variant] = timer.cpu_seconds / self.steps
            if arms and not index % 2:
                self._timed_arms(variant, arms, times)
            after = self._matmul_sample()
            record["step_seconds"].append(times[variant])
            record["cpu_step_seconds"].append(cpu_times[variant])
            record["memory"].append(timer.memory)
            if before and after and FLAGS.dtype_policy == "float32":
                achieved = record["flops_per_image"] * FLAGS.batch_size / times[variant]
                record["round_utilisation"].append(achieved / ((before + after) / 2))
            before = after
        self.per_round.append(times)
        self.per_round_cpu.append(cpu_times)

    def _timed_arms(self, variant, arms, times):
        timer, record = self.timers[variant], self.records[variant]
        for arm, callbacks in arms:
            self._fit(variant, self.steps, callbacks)
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
            record["median_cpu_step_seconds"] = _median(record["cpu_step_seconds"])
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
        for variant in records:
            base, path = split_variant(variant)
            if path is not None and base in records:
                ratios = [r[variant] / r[base] for r in self.per_round]
                cpu = [r[variant] / r[base] for r in self.per_round_cpu]
                result.setdefault("keras_path_to_library", {})[variant] = {
                    "median_of_round_ratios": _median(ratios), "round_ratios": ratios,
                    "cpu_median_of_round_ratios": _median(cpu), "cpu_round_ratios": cpu}
        if "mae" in records and "reference_mae" in records:
            ratios = [r["mae"] / r["reference_mae"] for r in self.per_round]
            result["mae_to_reference"] = {"median_of_round_ratios": _median(ratios),
                                          "round_ratios": ratios}
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
        print(TOKEN, "ready", flush=True)
        for line in sys.stdin:
            command = line.split()
            if command and command[0] == "round":
                worker.run_round(int(command[1]))
                print(TOKEN, "done", flush=True)
            elif command and command[0] == "finish":
                break
        result = worker.finish()
    except Exception as e:  # noqa: BLE001 - reported to the parent in the JSON
        import traceback

        traceback.print_exc()
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    with open(output_path, "w") as f:
        json.dump(result, f, indent=1)
    print(TOKEN, "exit", flush=True)
