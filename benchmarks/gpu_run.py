r"""Everything one GPU can tell us in one call of at most 9 minutes.

The lent GPU machine has JAX and torch but neither TensorFlow nor TFDS, and
nothing can be fetched there; `benchmarks/gpu_carry_kit.py` builds what
travels with the working tree (the Keras wheels, the CIFAR-10 subset) and
prints the one command that installs them and runs this. Each part is
capped in time and runs in processes of its own; `summary.json` is
rewritten after every part and every few seconds while the pretraining
parts run, so a call cut short still returns what was measured:

(a) the step table (`benchmarks/step_throughput.py`) at ViT-B/16, 224 px,
    bfloat16 mixed precision, batch 128, MAE and ccMIM, on JAX and torch
    (`step_<backend>.json`): images/s, MFU against the machine's bf16 peak
    (`--peak_tflops`: the workplace measured about 790 TFLOP/s for a large
    bf16 matmul there) and against the matmul this run measures, the
    allocator's peak memory, and whether the fused attention kernel runs
    (cuDNN flash attention in JAX's XLA programs, SDPA flash in torch);
(b) the ccMIM/MAE step-time ratio against its FLOP floor (2.05 at ViT-B);
(c) and (d), side by side, each in its own process
    (`benchmarks/gpu_science.py`) and sharing the time the step table left:
    `synthetic_objects` pretraining of the selectivity study's model at
    `T_s = 1` and annealed, logging the selectivities; and MAE and ccMIM on
    the CIFAR-10 subset at equal steps, with k-NN and a linear probe on the
    held-out images beside a random encoder;
(e) the encoders of (d) as float16 presets, `encoder_mae.zip` and
    `encoder_ccmim.zip`;
then the TensorFlow rows (its step table and the `tf.data` input pipeline),
in time kept for them, each skipped with a one-line reason where TensorFlow
cannot be imported.

At most 8 files land in --output_dir: summary.json, step_jax.json,
step_torch.json, the two encoder zips, step_tensorflow.json and
pipeline.json where TensorFlow runs, and the log a caller may write there.
Without a GPU it stops at once with exit status 2. `--dry_run` runs every
part on the CPU at a tiny size, float32: that is how it is tested.

    python -m benchmarks.gpu_run --output_dir=gpu_results --cifar_npz=gpu_kit/cifar10_subset.npz
    python -m benchmarks.gpu_run --dry_run --output_dir=/tmp/gpu_dry
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.hardware import machine_info  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "gpu_results", "Folder of every file this run writes.")
flags.DEFINE_boolean("dry_run", False, "Run every part on the CPU at a tiny size (the test).")
flags.DEFINE_list("backends", ["jax", "torch", "tensorflow"], "Backends of the step table.")
flags.DEFINE_list("parts", ["steps", "selectivity", "cifar10", "pipeline"],
                  "Parts to run: steps ((a), (b)), selectivity ((c)), cifar10 ((d), (e)), "
                  "pipeline (TensorFlow's input pipeline).")
flags.DEFINE_integer("batch_size", 128, "Step-table batch size.")
flags.DEFINE_string("science_backend", "jax", "Backend of the pretraining parts (c) and (d).")
flags.DEFINE_string("cifar_npz", None,
                    "The CIFAR-10 subset (benchmarks/gpu_carry_kit.py); part (d) is skipped "
                    "without it, except in a dry run, which makes a stand-in.")
flags.DEFINE_float("selectivity_seconds", None,
                   "Training seconds of each selectivity setting (default: what the time left "
                   "allows; see TRAINING_SHARE).")
flags.DEFINE_float("cifar_seconds", None,
                   "Training seconds of the CIFAR-10 ccMIM run; MAE runs as many steps (default: "
                   "what the time left allows).")
flags.DEFINE_string("data_dir", os.path.join(os.path.dirname(REPO), "shared", "data", "tfds"),
                    "TFDS data_dir of the TensorFlow input-pipeline row (cifar10_jpeg).")
flags.DEFINE_float("peak_tflops", 790.0,
                   "The GPU's bf16 peak, TFLOP/s (the lent H100/H200: a large bf16 matmul).")
flags.DEFINE_integer("budget_seconds", 540, "Wall-clock cap of the whole run.")

# Seconds per part, on the GPU and in a dry run on a CPU.
GPU_LIMITS = {"jax": 140, "torch": 100, "tensorflow": 110, "pipeline": 45}
# The pretraining parts share what is left after the step table, less a
# margin; each part's training seconds are its cap less its compilations,
# calibration and evaluation, over the training runs it holds (two
# selectivity settings; the CIFAR-10 ccMIM run and the faster MAE run of as
# many steps).
SCIENCE_MARGIN = 15
TRAINING_SHARE = {"selectivity": (100, 2.0), "cifar10": (160, 1.6)}  # (overhead s, runs)
DRY_LIMITS = dict.fromkeys([*GPU_LIMITS, "selectivity", "cifar10"], 300)
TINY = ["--image_size=16", "--patch_size=4", "--hidden_dim=32", "--num_layers=1",
        "--num_heads=2", "--decoder_hidden_dim=16", "--decoder_num_layers=1",
        "--decoder_num_heads=2"]
SCIENCE_PARTS = ("selectivity", "cifar10")


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


def tensorflow_missing():
    """Why TensorFlow cannot be imported here (one line), or None if it can."""
    proc = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.returncode == 0:
        return None
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


class Part:
    """One part in a process group of its own, capped at `seconds`."""

    def __init__(self, name, argv, seconds, backend, env, log_dir):
        self.name, self.seconds = name, seconds
        self.record = {"part": name, "command": " ".join(["python", *argv]),
                       "backend": backend, "limit_seconds": round(seconds)}
        self.log_path = os.path.join(log_dir, name.replace(" ", "_").replace(",", "") + ".log")
        self.log = open(self.log_path, "w")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=backend, **env),
            start_new_session=True)
        print(f"[gpu_run] {name}: started (at most {seconds:.0f} s)", flush=True)

    def poll(self):
        """True once the part has ended (or been stopped at its cap)."""
        if self.proc.poll() is None:
            if time.perf_counter() - self.start <= self.seconds:
                return False
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.record["error"] = f"stopped at its {self.seconds:.0f} s cap (partial results kept)"
        elif self.proc.returncode:
            with open(self.log_path, errors="ignore") as f:
                tail = f.read()[-1500:]
            self.record["error"] = f"exit {self.proc.returncode}: {tail}"
        self.log.close()
        self.record["seconds"] = round(time.perf_counter() - self.start, 1)
        print(f"[gpu_run] {self.name}: {self.record.get('error', 'done')[:300]} "
              f"({self.record['seconds']} s)", flush=True)
        return True


def step_argv(out, backend, seconds):
    argv = ["-m", "benchmarks.step_throughput", f"--backends={backend}", f"--output={out}",
            f"--worker_timeout={max(int(seconds) - 15, 10)}"]
    if FLAGS.dry_run:
        return argv + TINY + ["--batch_size=4", "--warmup_steps=1", "--steps=2", "--repeats=2",
                              "--matmul_size=128", "--matmul_repeats=2"]
    return argv + [
        "--preset=vit_base_patch16_224", f"--batch_size={FLAGS.batch_size}",
        "--dtype_policy=mixed_bfloat16", "--warmup_steps=2", "--steps=5", "--repeats=3",
        "--matmul_size=8192", "--matmul_inner=10", "--matmul_repeats=3", "--require_gpu",
        "--xla_dump", "--nointerleave_backends"]


def step_row(path, peak):
    """(a) and (b) of one backend's step JSON: img/s, MFU, memory, attention, ratio."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        (result,) = json.load(f)["results"]
    if "error" in result:
        return {"error": result["error"]}
    ratio = result.get("ccmim_to_mae", {})
    matmul = result["matmul"].get("bfloat16_gflops")
    row = {"device": result.get("device"), "attention_kernels": result.get("attention_kernels"),
           "ccmim_to_mae_time": ratio.get("median_of_round_ratios"),
           "flop_floor": ratio.get("flop_floor"), "bf16_matmul_tflops": matmul and matmul / 1e3}
    for variant, record in result["variants"].items():
        tflops = record["model_gflops_per_second"] / 1e3
        row[variant] = {
            "images_per_second": record["images_per_second"],
            "model_tflops_per_second": tflops,
            "mfu": tflops / peak,
            "share_of_measured_bf16_matmul": tflops / (matmul / 1e3) if matmul else None,
            "peak_memory_mb": record.get("peak_gpu_mb") or record.get("peak_rss_mb")}
    return row


def _science_record(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    unknown = sorted(set(FLAGS.parts) - {"steps", "pipeline", *SCIENCE_PARTS})
    if unknown:
        print(f"Error: --parts: unknown {', '.join(unknown)}; choose from steps, "
              f"{', '.join(SCIENCE_PARTS)}, pipeline.", file=sys.stderr)
        return 2
    start = time.perf_counter()
    gpu = None if FLAGS.dry_run else gpu_name()
    if not FLAGS.dry_run and gpu is None:
        print("gpu_run: no GPU visible ('nvidia-smi -L' lists none or is missing); "
              "run on a GPU machine, or pass --dry_run to rehearse on the CPU.", file=sys.stderr)
        return 2
    if FLAGS.cifar_npz and not os.path.isfile(FLAGS.cifar_npz):
        print(f"Error: --cifar_npz={FLAGS.cifar_npz} does not exist; build it with "
              "benchmarks/gpu_carry_kit.py.", file=sys.stderr)
        return 2
    out = os.path.abspath(FLAGS.output_dir)
    os.makedirs(out, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="gpu_run-")
    limits = DRY_LIMITS if FLAGS.dry_run else GPU_LIMITS
    env = {} if FLAGS.dry_run else {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    summary = {"dry_run": FLAGS.dry_run, "gpu": gpu, "bf16_peak_tflops": FLAGS.peak_tflops,
               "machine": machine_info(), "steps": {}, "selectivity": None, "cifar10": None,
               "parts": []}

    def left():
        return FLAGS.budget_seconds - (time.perf_counter() - start)

    def write():
        summary["seconds"] = round(time.perf_counter() - start, 1)
        with open(os.path.join(out, "summary.json.tmp"), "w") as f:
            json.dump(summary, f, indent=1, default=float)
        os.replace(os.path.join(out, "summary.json.tmp"), os.path.join(out, "summary.json"))

    def run(parts, gather=lambda: None):
        """Run `parts` side by side until each has ended, gathering as they go."""
        while parts:
            time.sleep(0.5 if FLAGS.dry_run else 5)
            done = [p for p in parts if p.poll()]
            gather()
            for part in done:
                summary["parts"].append(part.record)
                parts.remove(part)
            write()

    def step_part(backend):
        path = os.path.join(out, f"step_{backend}.json")
        seconds = min(limits[backend], max(1, left()))
        run([Part(f"step table, {backend}", step_argv(path, backend, seconds), seconds, backend,
                  env, scratch.name)])
        summary["steps"][backend] = step_row(path, FLAGS.peak_tflops)
        write()

    def skipped(name, reason):
        summary["parts"].append({"part": name, "skipped": reason})
        print(f"[gpu_run] {name}: skipped ({reason})", flush=True)
        write()

    write()
    steps = "steps" in FLAGS.parts
    tensorflow_rows = {"step table, tensorflow": "tensorflow"} if (
        steps and "tensorflow" in FLAGS.backends) else {}
    if "pipeline" in FLAGS.parts:
        tensorflow_rows["input pipeline"] = "pipeline"
    reason = tensorflow_missing() if tensorflow_rows else None
    # The TensorFlow rows run last, in the time kept for them here.
    reserve = 0 if reason else sum(limits[key] for key in tensorflow_rows.values())
    for backend in [b for b in FLAGS.backends if b != "tensorflow" and steps]:  # (a), (b)
        step_part(backend)
    science, paths = [], {}  # (c), (d), (e), side by side
    for name in [p for p in SCIENCE_PARTS if p in FLAGS.parts]:
        if name == "cifar10" and not (FLAGS.cifar_npz or FLAGS.dry_run):
            skipped("cifar10 pretraining + k-NN", "no --cifar_npz (benchmarks/gpu_carry_kit.py)")
            continue
        paths[name] = os.path.join(scratch.name, f"{name}.json")
        if FLAGS.dry_run:
            seconds = min(limits[name], max(1, left()))
        else:
            seconds = max(1, left() - SCIENCE_MARGIN - reserve)
        overhead, runs = TRAINING_SHARE[name]
        training = FLAGS.selectivity_seconds if name == "selectivity" else FLAGS.cifar_seconds
        training = training or max(20.0, (seconds - overhead) / runs)
        argv = ["-m", "benchmarks.gpu_science", f"--part={name}", f"--output={paths[name]}",
                f"--seconds={training}", f"--dry_run={FLAGS.dry_run}"]
        if name == "cifar10":
            argv.append(f"--preset_dir={out}")
            if FLAGS.cifar_npz:
                argv.append(f"--cifar_npz={os.path.abspath(FLAGS.cifar_npz)}")
        science.append(Part(name, argv, seconds, FLAGS.science_backend, env, scratch.name))

    def gather():
        for name, path in paths.items():
            summary[name] = _science_record(path) or summary[name]

    run(science, gather)
    for row in tensorflow_rows:
        if reason:
            skipped(row, f"TensorFlow cannot be imported: {reason}")
        elif row == "input pipeline":
            pipeline_part(out, limits, left, run, summary, scratch.name)
            write()
        else:
            step_part("tensorflow")
    print_summary(summary)
    failed = [p for p in summary["parts"] if "error" in p]
    return 1 if failed else 0


def print_summary(summary):
    """The figures of `summary.json`, a line each."""
    print(f"[gpu_run] {summary['gpu'] or 'no GPU (dry run)'}; {summary['machine']['label']}; "
          f"{summary['seconds']} s")
    for backend, row in summary["steps"].items():
        if row is None or "error" in row:
            print(f"(a) {backend}: {row and row['error']}")
            continue
        for variant in ("mae", "ccmim"):
            v = row[variant]
            print(f"(a) {backend} {variant}: {v['images_per_second']:.1f} img/s, MFU "
                  f"{v['mfu']:.3g} of {summary['bf16_peak_tflops']:g} TFLOP/s, peak memory "
                  f"{v['peak_memory_mb']:.0f} MB")
        print(f"(a) {backend} attention kernels: {row['attention_kernels']}")
        print(f"(b) {backend} ccMIM/MAE step time {row['ccmim_to_mae_time']:.2f} "
              f"(FLOP floor {row['flop_floor']:.2f})")
    for label, run in ((summary["selectivity"] or {}).get("runs") or {}).items():
        final = run.get("final") or {}
        print(f"(c) {label}: {summary['selectivity'].get('steps')} steps, final mask selectivity "
              f"{final.get('mask_selectivity')}, score top-K selectivity "
              f"{final.get('score_selectivity')}")
    cifar = summary["cifar10"] or {}
    for name, row in (cifar.get("scores") or {}).items():
        print(f"(d) {name}: k-NN {row['knn_top1']:.2f} +- {row['knn_top1_standard_error']:.2f}, "
              f"probe {row['probe_top1']:.2f} +- {row['probe_top1_standard_error']:.2f} "
              f"({cifar.get('steps')} steps, {row['num_heldout']} held-out images)")
    for name, preset in (cifar.get("presets") or {}).items():
        print(f"(e) {name}: {preset['file']}, {preset['bytes'] / 2**20:.2f} MiB, {preset['dtype']}")
    for part in summary["parts"]:
        state = part.get("skipped") and f"skipped: {part['skipped']}" or part.get("error", "done")
        print(f"part {part['part']}: {state[:200]} ({part.get('seconds', 0)} s)")


def pipeline_part(out, limits, left, run, summary, log_dir):
    """The `tf.data` input pipeline against the fastest step (TensorFlow)."""
    path = os.path.join(out, "pipeline.json")
    have_cifar = os.path.isdir(os.path.join(FLAGS.data_dir, "cifar10_jpeg"))
    datasets = "cifar10_jpeg,synthetic_objects" if have_cifar else "synthetic_objects"
    argv = ["-m", "benchmarks.input_pipeline", f"--output={path}", f"--data_dir={FLAGS.data_dir}",
            f"--image_size={16 if FLAGS.dry_run else 224}", f"--datasets={datasets}"]
    argv += (["--batch_size=8", "--warmup_batches=1", "--batches=3", "--repeats=2"]
             if FLAGS.dry_run else [f"--batch_size={FLAGS.batch_size}", "--batches=20",
                                    "--repeats=3"])
    rates = [(r[v]["images_per_second"], b) for b, r in summary["steps"].items() if r
             for v in ("mae", "ccmim") if v in r]
    if rates:
        argv.append(f"--step_json={os.path.join(out, f'step_{max(rates)[1]}.json')}")
    seconds = min(limits["pipeline"], max(1, left()))
    run([Part("input pipeline", argv, seconds, "tensorflow", {}, log_dir)])
    if os.path.exists(path):
        with open(path) as f:
            summary["pipeline"] = [{k: r.get(k) for k in ("dataset", "images_per_second",
                                                          "headroom")}
                                   for r in json.load(f)["results"]]


if __name__ == "__main__":
    app.run(main)
