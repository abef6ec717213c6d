"""The few backend-specific operations the step benchmark needs (device
name, sync, device constants, the matmul peak, peak memory, attention
kernels), run inside one backend's worker process."""

import os
import statistics
import time

BACKENDS = ("tensorflow", "jax", "torch")


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
