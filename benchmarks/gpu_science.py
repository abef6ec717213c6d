r"""The GPU run's pretraining parts, one per process, without TensorFlow.

`benchmarks/gpu_run.py` starts this once per part (with `KERAS_BACKEND`
set) and reads the JSON it rewrites after every logged point, so a part cut
off at its time cap still leaves what it measured:

* `--part=selectivity`: does importance sampling at the paper's `T_s = 1`
  become selective with long training? The selectivity study's model
  (ViT-T/4 at 32 px with 4 blocks, batch 64, blr 1.5e-3; see
  `benchmarks/selectivity_study.py`) pretrains on `synthetic_objects` for as
  many steps as `--seconds` allow (per setting, from a timed calibration),
  at `T_s = 1` and annealed 1 -> 0.1, logging `mask_selectivity` and the
  score top-K selectivity (`score_selectivity`) at 12 points.
* `--part=cifar10`: MAE and ccMIM (ViT-T/4, 12 blocks, as
  `benchmarks/cifar10_study.py`) pretrain for the same number of steps,
  what `--seconds` allow the slower ccMIM step, on the training part of
  the CIFAR-10 subset (`benchmarks/cifar10_subset.py`); then k-NN and a
  linear probe score both encoders and a random one on the held-out part.
  Both encoders are saved first, as float16 presets, one zip file each, in
  `--preset_dir`.

`--dry_run` shrinks the model, the data and the steps to run in seconds on a
CPU; without `--cifar_npz` it writes a stand-in subset of `synthetic_objects`
images (through the same JPEG file format).

    KERAS_BACKEND=jax python -m benchmarks.gpu_science --part=selectivity --output=/tmp/s.json
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("part", None, ["selectivity", "cifar10"], "Which part to run.")
flags.DEFINE_string("output", None, "The part's JSON, rewritten as it goes.")
flags.DEFINE_boolean("dry_run", False, "A tiny model, tiny data and a few steps (the test).")
flags.DEFINE_float("seconds", 75.0, "Training seconds per run (per setting; per variant).")
flags.DEFINE_string("cifar_npz", None, "The CIFAR-10 subset (benchmarks/gpu_carry_kit.py).")
flags.DEFINE_string("preset_dir", None, "Where --part=cifar10 writes encoder_<variant>.zip.")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")

PRESET = "vit_tiny_patch4_32"
# The dry run's encoder: 32 px (the data's size) in 16 patches, one block.
DRY_ENCODER = dict(patch_size=8, hidden_dim=32, num_layers=1, num_heads=2)
DRY_DECODER = dict(decoder_hidden_dim=16, decoder_num_layers=1, decoder_num_heads=2)
SELECTIVITY_SETTINGS = {
    "T_s=1": dict(sampling_temperature=1.0),
    "T_s=1->0.1": dict(sampling_temperature=0.1, sampling_temperature_start=1.0),
}
CIFAR_VARIANTS = {"ccmim": dict(), "mae": dict(masking="random", contrastive="none")}
CALIBRATION_STEPS = 20


def _write(record):
    record["written_at_seconds"] = round(time.perf_counter() - START, 1)
    tmp = FLAGS.output + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1, default=float)
    os.replace(tmp, FLAGS.output)


def _sizes(encoder):
    """(encoder overrides, pretrainer kwargs) of this run's model size."""
    if FLAGS.dry_run:
        return dict(encoder, **DRY_ENCODER), dict(DRY_DECODER)
    return dict(encoder), {}


def _steps(pa, build, images, batch_size, record):
    """Training steps for --seconds, from a timed calibration of `build(1000)`."""
    if FLAGS.dry_run:
        return 4
    seconds = pa.seconds_per_step(build(1000), images, batch_size, CALIBRATION_STEPS,
                                  seed=FLAGS.seed)
    record["seconds_per_step"] = seconds
    return max(int(FLAGS.seconds / seconds), 10)


def selectivity(record):
    from benchmarks import array_pretraining as pa
    from keras_ccmim.data.synthetic_objects import make_synthetic_objects

    encoder, decoder = _sizes({"num_layers": 4})
    batch_size, points = (8, 2) if FLAGS.dry_run else (64, 12)
    data = make_synthetic_objects(64 if FLAGS.dry_run else 10_000, image_size=32, seed=0)
    images, foreground = data["image"], data["foreground"]
    lift_images = 16 if FLAGS.dry_run else 256
    record.update(model=dict(preset=PRESET, **encoder, **decoder), batch_size=batch_size,
                  blr=1.5e-3, images=len(images), lift_images=lift_images, runs={})

    def build(steps, **setting):
        return pa.build_pretrainer(PRESET, encoder, steps, 1.5e-3, batch_size, 1 / 12,
                                   seed=FLAGS.seed, **decoder, **setting)

    steps = _steps(pa, lambda s: build(s, **SELECTIVITY_SETTINGS["T_s=1"]), images,
                   batch_size, record)
    record["steps"] = steps
    _write(record)
    for label, setting in SELECTIVITY_SETTINGS.items():
        run = record["runs"][label] = {"setting": setting, "history": {}}

        def on_point(history, run=run):
            run["history"] = history
            _write(record)

        history, seconds = pa.pretrain_arrays(
            build(steps, **setting), images, steps, batch_size, points, seed=FLAGS.seed,
            foreground=foreground, lift_images=lift_images, on_point=on_point)
        run.update(history=history, seconds=seconds, final={
            k: history[k][-1] for k in ("mask_selectivity", "score_selectivity",
                                        "foreground_lift", "reconstruction_loss")
            if k in history})
        _write(record)


def _stand_in_subset(path):
    """A tiny file in the CIFAR-10 subset's format, of synthetic_objects images."""
    from benchmarks.cifar10_subset import jpeg_bytes, write_subset
    from keras_ccmim.data.synthetic_objects import make_synthetic_objects

    data = make_synthetic_objects(48, image_size=32, seed=3)
    jpegs = jpeg_bytes(data["image"])
    labels = data["label"]
    return write_subset(path, {"train": (jpegs[:32], labels[:32], "stand-in[:32]"),
                               "heldout": (jpegs[32:], labels[32:], "stand-in[32:]")})


def cifar10(record):
    from benchmarks import array_pretraining as pa
    from benchmarks.cifar10_subset import read_subset
    from keras_ccmim.evaluation.encoders import random_encoder

    with tempfile.TemporaryDirectory() as tmp:
        path = FLAGS.cifar_npz or _stand_in_subset(os.path.join(tmp, "stand_in.npz"))
        data, splits = read_subset(path)
    (images, _), heldout = data["train"], data["heldout"]
    encoder, decoder = _sizes({})
    batch_size, points = (8, 2) if FLAGS.dry_run else (256, 8)
    record.update(model=dict(preset=PRESET, **encoder, **decoder), batch_size=batch_size,
                  blr=1.5e-3, subset=path if FLAGS.cifar_npz else "stand-in (synthetic_objects)",
                  splits=splits, variants={})

    def build(steps, variant):
        return pa.build_pretrainer(PRESET, encoder, steps, 1.5e-3, batch_size, 0.2,
                                   seed=FLAGS.seed, **decoder, **CIFAR_VARIANTS[variant])

    steps = _steps(pa, lambda s: build(s, "ccmim"), images, batch_size, record)
    record["steps"] = steps
    _write(record)
    encoders = {}
    for variant in CIFAR_VARIANTS:
        run = record["variants"][variant] = {}

        def on_point(history, run=run):
            run["history"] = history
            _write(record)

        model = build(steps, variant)
        run["history"], run["seconds"] = pa.pretrain_arrays(
            model, images, steps, batch_size, points, seed=FLAGS.seed, on_point=on_point)
        encoders[variant] = model.encoder
        _write(record)
    if FLAGS.preset_dir:
        record["presets"] = {}
        for variant in CIFAR_VARIANTS:
            path = pa.save_preset_zip(encoders[variant], os.path.join(
                FLAGS.preset_dir, f"encoder_{variant}.zip"))
            record["presets"][variant] = {"file": os.path.basename(path),
                                          "bytes": os.path.getsize(path), "dtype": "float16",
                                          "steps": steps}
        _write(record)
    encoders["random_init"] = random_encoder(PRESET, seed=FLAGS.seed, **encoder)
    start = time.perf_counter()
    record["scores"] = pa.evaluate_encoders(encoders, data["train"], heldout,
                                            1 if FLAGS.dry_run else FLAGS.probe_epochs,
                                            seed=FLAGS.seed)
    record["evaluation_seconds"] = time.perf_counter() - start
    _write(record)


START = time.perf_counter()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.part or not FLAGS.output:
        print("Error: pass --part=selectivity|cifar10 and --output=FILE.", file=sys.stderr)
        return 2
    import keras

    record = {"part": FLAGS.part, "backend": keras.backend.backend(), "dry_run": FLAGS.dry_run}
    _write(record)
    {"selectivity": selectivity, "cifar10": cifar10}[FLAGS.part](record)
    record["done"] = True
    _write(record)
    return 0


if __name__ == "__main__":
    app.run(main)
