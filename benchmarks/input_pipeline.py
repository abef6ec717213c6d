r"""Throughput of the pretraining input pipeline against the training step.

Iterates `keras_ccmim.data.make_dataset(..., training=True)` (shuffle,
RandomResizedCrop, flip, normalise, batch, prefetch) over each dataset and
reports images/s (median over `--repeats` windows of `--batches` batches,
after `--warmup_batches` that fill the shuffle buffer) and the CPU time the
pipeline spends per image. With `--step_json` (the output of
`benchmarks/step_throughput.py`) it compares both with the fastest measured
training step:

* `headroom` = pipeline images/s / step images/s (must be > 1);
* `cpu_share` = the fraction of the machine's cores the pipeline would keep
  busy while feeding the step at its rate (`step img/s * CPU s per image /
  cores`): on a CPU-only machine the pipeline and the step share the cores,
  so this is the step time it would cost at worst.

    python -m benchmarks.input_pipeline --step_json=/tmp/tiny32.json
"""

import json
import os
import statistics
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["cifar10_jpeg", "synthetic_objects"], "Datasets to read.")
flags.DEFINE_string(
    "data_dir", os.path.join(os.path.dirname(REPO), "shared", "data", "tfds"),
    "Prepared TFDS datasets (for cifar10_jpeg).",
)
flags.DEFINE_string("cifar_split", "train[:45000]", "Split of the TFDS datasets.")
flags.DEFINE_string("synthetic_split", "train", "Split of synthetic_objects.")
flags.DEFINE_integer("image_size", 32, "Output image size.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("warmup_batches", 10, "Batches read before timing (fills the buffers).")
flags.DEFINE_integer("batches", 40, "Batches per timed window.")
flags.DEFINE_integer("repeats", 5, "Timed windows; the median is reported.")
flags.DEFINE_string("step_json", None, "A step_throughput.py JSON to compare against.")
flags.DEFINE_string("output", None, "Write the results as JSON here.")


def _cpu_seconds():
    times = os.times()
    return times.user + times.system


def measure(name, split):
    from keras_ccmim.data import make_dataset

    start = time.perf_counter()
    dataset = make_dataset(
        name,
        split=split,
        batch_size=FLAGS.batch_size,
        image_size=FLAGS.image_size,
        data_dir=FLAGS.data_dir,
        training=True,
        repeat=True,
    )
    iterator = iter(dataset)
    next(iterator)
    first_batch = time.perf_counter() - start
    for _ in range(FLAGS.warmup_batches):
        next(iterator)
    rates, cpu_per_image = [], []
    for _ in range(FLAGS.repeats):
        cpu, wall = _cpu_seconds(), time.perf_counter()
        for _ in range(FLAGS.batches):
            images, _ = next(iterator)
        images.numpy()
        wall = time.perf_counter() - wall
        cpu = _cpu_seconds() - cpu
        count = FLAGS.batches * FLAGS.batch_size
        rates.append(count / wall)
        cpu_per_image.append(cpu / count)
    return {
        "dataset": name,
        "split": split,
        "images_per_second": statistics.median(rates),
        "window_rates": rates,
        "cpu_seconds_per_image": statistics.median(cpu_per_image),
        "seconds_to_first_batch": first_batch,
    }


def fastest_step(path):
    """`(backend, variant, images/s)` of the fastest step in a step JSON."""
    with open(path) as f:
        report = json.load(f)
    best = None
    for result in report.get("results", []):
        for variant, record in result.get("variants", {}).items():
            rate = record.get("images_per_second")
            if rate and (best is None or rate > best[2]):
                best = (result["backend"], variant, rate)
    return best, report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    splits = {"synthetic_objects": FLAGS.synthetic_split}
    cores = os.cpu_count()
    step = None
    if FLAGS.step_json:
        step, report = fastest_step(FLAGS.step_json)
        image_size = None
        for result in report.get("results", []):
            for record in result.get("variants", {}).values():
                image_size = record["config"]["image_size"][0]
        if image_size and image_size != FLAGS.image_size:
            print(f"note: the step ran at {image_size} px, the pipeline at {FLAGS.image_size} px")
    results = []
    for name in FLAGS.datasets:
        result = measure(name, splits.get(name, FLAGS.cifar_split))
        if step:
            backend, variant, rate = step
            result["step"] = {"backend": backend, "variant": variant, "images_per_second": rate}
            result["headroom"] = result["images_per_second"] / rate
            result["cpu_share"] = rate * result["cpu_seconds_per_image"] / cores
        results.append(result)

    print("| dataset | pipeline img/s | CPU ms/image | fastest step img/s | headroom | "
          "CPU share at step rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results:
        step_text = (f"{r['step']['images_per_second']:.0f} ({r['step']['backend']} "
                     f"{r['step']['variant']})" if "step" in r else "-")
        print(f"| {r['dataset']} {r['split']} | {r['images_per_second']:.0f} | "
              f"{1e3 * r['cpu_seconds_per_image']:.2f} | {step_text} | "
              f"{r.get('headroom', float('nan')):.1f}x | "
              f"{100 * r.get('cpu_share', float('nan')):.1f}% |")
    bottleneck = [r["dataset"] for r in results if r.get("headroom", 2) < 1]
    if bottleneck:
        print(f"The input pipeline is the bottleneck for: {', '.join(bottleneck)}")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"cpu_count": cores, "batch_size": FLAGS.batch_size,
                       "image_size": FLAGS.image_size, "results": results}, f, indent=1)
    return 1 if bottleneck else 0


if __name__ == "__main__":
    app.run(main)
