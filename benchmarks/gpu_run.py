r"""Everything one GPU can tell us in under 10 minutes, as one command.

A GPU is lent for about 15 minutes at a time, so this script does, in order,
each part capped in time, writing every result as JSON under --output_dir:

1. `step.json`: the step table (benchmarks/step_throughput.py) at ViT-B/16,
   224 px, bfloat16 mixed precision, MAE and ccMIM, per backend, with the
   XLA programs dumped to see whether cuDNN fused attention is used, and
   torch's attention kernels (flash / memory-efficient SDPA) from its
   profiler;
2. `pipeline.json`: the input pipeline at 224 px against the fastest step
   (benchmarks/input_pipeline.py);
3. `cifar10/`: a short CIFAR-10 pretraining of MAE and ccMIM (ViT-T/4) with
   k-NN and a linear probe at the end (benchmarks/cifar10_study.py);
4. `summary.json`: the GPU, the machine, per backend and step the img/s and
   the MFU against the GPU's published dense bf16 peak, the ccMIM/MAE time
   ratio, the attention kernels, the pipeline's headroom, the k-NN figures,
   and each part's seconds and error.

Without a GPU it stops at once with exit status 2 and says why.
`--dry_run` runs the same parts on the CPU at a tiny size, float32, in a
minute or two: that is how it is tested without a GPU.

    python benchmarks/gpu_run.py --output_dir=gpu_results
    python benchmarks/gpu_run.py --dry_run --output_dir=/tmp/gpu_dry
"""

import json
import os
import subprocess
import sys
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.hardware import machine_info  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "gpu_results", "Folder of every JSON this run writes.")
flags.DEFINE_boolean("dry_run", False, "Run every part on the CPU at a tiny size (the test).")
flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Backends of the step table.")
flags.DEFINE_integer("batch_size", 128, "Step-table batch size (per GPU).")
flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data", "tfds"),
                    "TFDS data_dir holding cifar10_jpeg (parts 2 and 3 skip it when missing).")
flags.DEFINE_integer("cifar_epochs", 3, "Epochs of the CIFAR-10 pretraining per variant.")
flags.DEFINE_string("cifar_backend", "jax", "Backend of the CIFAR-10 pretraining.")
flags.DEFINE_float("peak_tflops", None, "The GPU's dense bf16 peak (default: looked up by name).")
flags.DEFINE_integer("budget_seconds", 570, "Wall-clock cap of the whole run.")

# Published dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by the
# substring of the name `nvidia-smi -L` prints. Unknown GPUs: --peak_tflops.
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4),
                    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0))

# Seconds per part: (step table per backend, pipeline, CIFAR-10).
GPU_LIMITS = {"tensorflow": 110, "jax": 90, "torch": 80, "pipeline": 45, "cifar10": 220}
DRY_LIMITS = {"tensorflow": 300, "jax": 300, "torch": 300, "pipeline": 120, "cifar10": 300}
TINY = ["--image_size=16", "--patch_size=4", "--hidden_dim=32", "--num_layers=1",
        "--num_heads=2", "--decoder_hidden_dim=16", "--decoder_num_layers=1",
        "--decoder_num_heads=2"]


def gpu_name():
    """The first GPU's name from `nvidia-smi -L`, or None when there is none."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.stdout.splitlines():
        if line.startswith("GPU "):
            return line.split(":", 1)[1].split("(UUID", 1)[0].strip()
    return None


def peak_tflops(name):
    if FLAGS.peak_tflops:
        return FLAGS.peak_tflops
    for key, value in BF16_PEAK_TFLOPS:
        if name and key in name:
            return value
    return None


def run_part(name, argv, seconds, backend=None, env_extra=None):
    """Runs `python argv...` capped at `seconds`; a record of how it went."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env_extra or {}))
    if backend:
        env["KERAS_BACKEND"] = backend
    start = time.perf_counter()
    record = {"part": name, "command": " ".join(["python", *argv]), "limit_seconds": seconds}
    try:
        proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=seconds)
        record["returncode"] = proc.returncode
        record["stdout_tail"] = proc.stdout[-4000:]
        if proc.returncode:
            record["error"] = f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    except subprocess.TimeoutExpired:
        record["error"] = f"ran past its {seconds} s"
    record["seconds"] = round(time.perf_counter() - start, 1)
    print(f"[gpu_run] {name}: {record.get('error', 'done')} ({record['seconds']} s)", flush=True)
    return record


def step_argv(out, backend):
    argv = ["benchmarks/step_throughput.py", f"--backends={backend}", f"--output={out}"]
    if FLAGS.dry_run:
        return argv + TINY + ["--batch_size=4", "--warmup_steps=1", "--steps=2", "--repeats=2",
                              "--matmul_size=128", "--matmul_repeats=2"]
    return argv + [
        "--preset=vit_base_patch16_224", f"--batch_size={FLAGS.batch_size}",
        "--dtype_policy=mixed_bfloat16", "--warmup_steps=2", "--steps=5", "--repeats=3",
        "--matmul_size=8192", "--matmul_inner=10", "--matmul_repeats=3", "--require_gpu",
        "--xla_dump", "--nointerleave_backends"]


def step_rows(step_files, peak):
    """Per backend and step: img/s, MFU, ccMIM/MAE ratio, attention kernels."""
    rows = {}
    for backend, path in step_files.items():
        if not os.path.exists(path):
            continue
        with open(path) as f:
            (result,) = json.load(f)["results"]
        if "error" in result:
            rows[backend] = {"error": result["error"]}
            continue
        row = {"attention_kernels": result.get("attention_kernels"),
               "ccmim_to_mae_time": result.get("ccmim_to_mae", {}).get("median_of_round_ratios")}
        for variant, record in result["variants"].items():
            gflops = record["model_gflops_per_second"]
            row[variant] = {"images_per_second": record["images_per_second"],
                            "model_tflops_per_second": gflops / 1e3,
                            "mfu": None if not peak else gflops / 1e3 / peak}
        rows[backend] = row
    return rows


def cifar_argv(out):
    argv = ["benchmarks/cifar10_study.py", f"--output_dir={out}", f"--data_dir={FLAGS.data_dir}",
            "--variants=mae,ccmim", "--synthetic_epochs=0"]
    if FLAGS.dry_run:
        return argv + ["--epochs=1", "--num_images=256", "--batch_size=64",
                       "--points_per_epoch=1", "--num_layers=1", "--probe_train_images=500",
                       "--probe_epochs=1"]
    return argv + [f"--epochs={FLAGS.cifar_epochs}", "--num_images=45000", "--batch_size=256",
                   "--points_per_epoch=1", "--probe_epochs=10"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    start = time.perf_counter()
    gpu = None if FLAGS.dry_run else gpu_name()
    if not FLAGS.dry_run and gpu is None:
        print("gpu_run: no GPU visible ('nvidia-smi -L' lists none or is missing); "
              "run on a GPU machine, or pass --dry_run to rehearse on the CPU.", file=sys.stderr)
        return 2
    out = os.path.abspath(FLAGS.output_dir)
    os.makedirs(out, exist_ok=True)
    limits = DRY_LIMITS if FLAGS.dry_run else GPU_LIMITS
    env = {} if FLAGS.dry_run else {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",
                                    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0")}
    parts, step_files = [], {}

    def left():
        return FLAGS.budget_seconds - (time.perf_counter() - start)

    for backend in FLAGS.backends:
        step_files[backend] = os.path.join(out, f"step_{backend}.json")
        parts.append(run_part(f"step table, {backend}", step_argv(step_files[backend], backend),
                              min(limits[backend], max(1, left())), env_extra=env))
    peak = None if FLAGS.dry_run else peak_tflops(gpu)
    steps = step_rows(step_files, peak)
    fastest = max(((b, r[v]["images_per_second"], step_files[b]) for b, r in steps.items()
                   for v in ("mae", "ccmim") if v in r), key=lambda t: t[1], default=None)
    have_cifar = os.path.isdir(os.path.join(FLAGS.data_dir, "cifar10_jpeg"))
    pipeline_json = os.path.join(out, "pipeline.json")
    size = 16 if FLAGS.dry_run else 224
    pipe = ["benchmarks/input_pipeline.py", f"--output={pipeline_json}", f"--image_size={size}",
            f"--data_dir={FLAGS.data_dir}",
            "--datasets=" + ("cifar10_jpeg,synthetic_objects" if have_cifar else "synthetic_objects")]
    pipe += (["--batch_size=8", "--warmup_batches=1", "--batches=3", "--repeats=2"]
             if FLAGS.dry_run else [f"--batch_size={FLAGS.batch_size}", "--batches=20", "--repeats=3"])
    if fastest:
        pipe.append(f"--step_json={fastest[2]}")
    parts.append(run_part("input pipeline", pipe, min(limits["pipeline"], max(1, left())),
                          backend="tensorflow"))
    cifar = None
    if have_cifar:
        cifar_dir = os.path.join(out, "cifar10")
        parts.append(run_part("cifar10 pretraining + k-NN", cifar_argv(cifar_dir),
                              min(limits["cifar10"], max(1, left())),
                              backend="tensorflow" if FLAGS.dry_run else FLAGS.cifar_backend,
                              env_extra=env))
        results = os.path.join(cifar_dir, "results.json")
        if os.path.exists(results):
            with open(results) as f:
                cifar = [{k: row.get(k) for k in ("variant", "knn_top1", "probe_top1",
                                                   "pretrain_seconds")}
                         for row in json.load(f)["rows"]]
    else:
        parts.append({"part": "cifar10 pretraining + k-NN",
                      "error": f"skipped: no cifar10_jpeg under --data_dir={FLAGS.data_dir}"})
    pipeline = None
    if os.path.exists(pipeline_json):
        with open(pipeline_json) as f:
            pipeline = [{k: r.get(k) for k in ("dataset", "images_per_second", "headroom")}
                        for r in json.load(f)["results"]]
    summary = {"dry_run": FLAGS.dry_run, "gpu": gpu, "bf16_peak_tflops": peak,
               "machine": machine_info(), "steps": steps, "pipeline": pipeline,
               "cifar10": cifar, "parts": parts,
               "seconds": round(time.perf_counter() - start, 1)}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: summary[k] for k in ("gpu", "steps", "pipeline", "cifar10", "seconds")},
                     indent=1))
    return 1 if any("error" in p and not p["error"].startswith("skipped") for p in parts) else 0


if __name__ == "__main__":
    app.run(main)
