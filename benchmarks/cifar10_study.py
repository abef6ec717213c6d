"""CIFAR-10 study: ccMIM against MAE and its ablations, at the scale this
machine allows.

Pretrains ViT-T/4 (32 px) on `cifar10_jpeg` `train[:45000]` with the same
schedule for each variant:

  mae            masking=random,              contrastive=none
  ccmim          the defaults: importance sampling at T_s = 1 (the paper's) of the
                 public code's probability score, InfoNCE, lambda 0.2
  ccmim_logits   the paper's own logit score (score_from=logits), T_s = 1
  ccmim_anneal   T_s annealed from 1 to 0.1 over the run (half cosine)
  ccmim_t025     importance sampling at a constant T_s = 0.25
  importance     deterministic top-K masking + InfoNCE
  is_lambda0     importance sampling, lambda = 0
  block          block masking + InfoNCE

A variant named `NAME@S` is NAME with seed S (pretraining and probe), so
`--variants=mae,mae@1` measures the seed-to-seed spread. Each finished
variant leaves `<rows_dir>/<variant>.json`; running again skips the
variants that have one (so a study can be run in parts, or resumed, with its
rows committed), and the table holds every variant named in --variants.

then evaluates each encoder (and a randomly initialised one) with weighted
k-NN and a linear probe on the held-out `train[45000:]` (mean patch feature).
A second, small part pretrains on `synthetic_objects` to plot the
reconstruction and contrastive losses and the foreground lift over training.

Writes results.json, results.md, curves_synthetic.png and curves_cifar10.png
to --output_dir.

    python -m benchmarks.cifar10_study --epochs=1 --num_images=45000
"""

import json
import os
import time

from absl import app, flags


from benchmarks.hardware import hardware_label  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {
    "mae": dict(masking="random", contrastive="none"),
    "ccmim": dict(),
    "ccmim_logits": dict(score_from="logits"),
    "ccmim_anneal": dict(sampling_temperature=0.1, sampling_temperature_start=1.0),
    "ccmim_t025": dict(sampling_temperature=0.25),
    "importance": dict(masking="importance"),
    "is_lambda0": dict(contrastive_weight=0.0),
    "block": dict(masking="block"),
}

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/cifar10_study", "Where runs and results go.")
flags.DEFINE_string("data_dir", os.path.join(REPO, "..", "shared", "data", "tfds"), "TFDS data_dir holding cifar10_jpeg.")
flags.DEFINE_list("variants", list(VARIANTS), "Variants to run.")
flags.DEFINE_integer("epochs", 1, "Pretraining epochs (over --num_images).")
flags.DEFINE_integer("num_images", 45000, "Pretraining images taken from train[:45000].")
flags.DEFINE_integer("num_layers", 12, "Encoder depth (ViT-T/4 has 12).")
flags.DEFINE_integer("batch_size", 128, "Pretraining batch size.")
flags.DEFINE_float("blr", 1.5e-3, "Base learning rate (lr = blr * batch / 256).")
flags.DEFINE_float("warmup_epochs", 0.2, "Warmup epochs.")
flags.DEFINE_integer("probe_train_images", 10000, "Images of train[:45000] used as k-NN bank / probe training set.")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs.")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_integer(
    "points_per_epoch", 8,
    "Logged points per data epoch: each epoch is run as this many Keras epochs (the "
    "curves' resolution; the schedule is the same).")
flags.DEFINE_integer("synthetic_epochs", 4, "Epochs of the synthetic_objects curve runs (0 skips them).")
flags.DEFINE_integer("synthetic_images", 2048, "Images of the synthetic_objects curve runs.")
flags.DEFINE_boolean(
    "replot", False, "Rewrite results.md and the PNGs from --output_dir's results.json; train nothing.")
flags.DEFINE_string(
    "rows_dir", None,
    "Folder of the finished variants' rows (<variant>.json; default <output_dir>/rows): variants "
    "with a row there are not run again, so a study can be run in parts and its rows kept in git.")
flags.DEFINE_string("hardware", None, "Hardware label for the table (default: the CPU model and core count).")


def parse_variant(name):
    """`"mae@1"` -> `("mae", 1)`; a name without `@` has the --seed."""
    base, _, seed = name.partition("@")
    if base not in VARIANTS:
        raise app.UsageError(f"Unknown variant {base!r}; choose from {sorted(VARIANTS)}.")
    if seed and not seed.isdigit():
        raise app.UsageError(f"Variant {name!r}: the seed after '@' must be an integer.")
    return base, int(seed) if seed else FLAGS.seed


def evaluate_encoder(encoder, data_dir, seed):
    from keras_ccmim.data import make_dataset
    from keras_ccmim.evaluation.features import extract_features
    from keras_ccmim.evaluation.knn import knn_classify
    from keras_ccmim.evaluation.linear_probe import linear_probe

    def features(split, num):
        ds = make_dataset("cifar10_jpeg", split=split, batch_size=250, image_size=32,
                          data_dir=data_dir, training=False, num_images=num)
        return extract_features(encoder, ds)

    train_x, train_y = features("train[:45000]", FLAGS.probe_train_images)
    eval_x, eval_y = features("train[45000:]", None)
    knn = knn_classify(train_x, train_y, eval_x, eval_y, num_classes=10)
    probe = linear_probe(train_x, train_y, eval_x, eval_y, num_classes=10,
                         epochs=FLAGS.probe_epochs, seed=seed)
    probe = probe.to_dict() if hasattr(probe, "to_dict") else dict(probe)
    return {"knn_top1": knn["top1"], "knn_top5": knn["top5"],
            "probe_top1": probe["top1"], "probe_top5": probe["top5"],
            "num_probe_train": int(len(train_y)), "num_eval": int(len(eval_y))}


def pretrain_variant(name, dataset, workdir, epochs, num_images, data_dir, split, seed=None):
    from keras_ccmim.training.config import PretrainConfig
    from keras_ccmim.training.pretrain import pretrain

    points = FLAGS.points_per_epoch
    steps_per_point = num_images // FLAGS.batch_size // points
    if steps_per_point < 1:
        raise app.UsageError(
            f"--num_images={num_images} gives fewer than --points_per_epoch={points} steps of "
            f"--batch_size={FLAGS.batch_size} per epoch; lower --points_per_epoch.")
    config = PretrainConfig(
        preset="vit_tiny_patch4_32", num_layers=FLAGS.num_layers, dataset=dataset,
        data_dir=data_dir, split=split, num_images=num_images, batch_size=FLAGS.batch_size,
        epochs=epochs * points, steps_per_epoch=steps_per_point, blr=FLAGS.blr,
        warmup_epochs=FLAGS.warmup_epochs * points, seed=FLAGS.seed if seed is None else seed,
        workdir=workdir, verbose=2, tensorboard_every_steps=0, **VARIANTS[name])
    start = time.time()
    results = pretrain(config)
    return results, time.time() - start


def markdown_table(rows):
    header = ("| variant | masking | contrastive | lambda | seed | epochs | images | steps | pretrain s | "
              "k-NN top-1 | probe top-1 | hardware |")
    lines = [header, "|" + "---|" * 12]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['masking']} | {r['contrastive']} | {r['lambda']} | "
            f"{r.get('seed', '-')} | {r['epochs']} | "
            f"{r['images']} | {r['steps']} | {r['pretrain_seconds']:.0f} | {r['knn_top1']:.2f} | "
            f"{r['probe_top1']:.2f} | {r['hardware']} |")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    variants = [(name, *parse_variant(name)) for name in FLAGS.variants]
    out = os.path.abspath(FLAGS.output_dir)
    if FLAGS.replot:
        with open(os.path.join(out, "results.json")) as f:
            write_outputs(out, json.load(f))
        return 0
    import keras

    from keras_ccmim.evaluation.encoders import random_encoder
    from keras_ccmim.models.vit_encoder import load_encoder

    rows_dir = os.path.abspath(FLAGS.rows_dir or os.path.join(out, "rows"))
    os.makedirs(rows_dir, exist_ok=True)
    hardware = FLAGS.hardware or hardware_label()
    data_dir = os.path.abspath(FLAGS.data_dir)
    study_start = time.time()
    rows, curves = [], {}

    # Foreground lift and loss curves on synthetic_objects (ccMIM vs MAE).
    synthetic = {}
    if FLAGS.synthetic_epochs > 0:
        for name in ("mae", "ccmim"):
            results, seconds = pretrain_variant(
                name, "synthetic_objects", os.path.join(out, f"synthetic_{name}"),
                FLAGS.synthetic_epochs, FLAGS.synthetic_images, None, "train")
            synthetic[name] = results.history
        plot_curves(out, synthetic, {}, FLAGS.points_per_epoch)

    for name, base, seed in variants:
        row_path = os.path.join(rows_dir, f"{name}.json")
        if os.path.exists(row_path):
            with open(row_path) as f:
                row = json.load(f)
            print(f"{name}: done before, row read from {row_path}", flush=True)
        else:
            results, seconds = pretrain_variant(
                base, "cifar10_jpeg", os.path.join(out, name), FLAGS.epochs, FLAGS.num_images,
                data_dir, "train[:45000]", seed=seed)
            metrics = evaluate_encoder(load_encoder(results.workdir), data_dir, seed)
            settings = dict(masking="importance_sampling", contrastive="infonce",
                            contrastive_weight=0.2)
            settings.update(VARIANTS[base])
            row = dict(variant=name, masking=settings["masking"],
                       contrastive=settings["contrastive"],
                       **{"lambda": settings["contrastive_weight"]
                          if settings["contrastive"] != "none" else "-"},
                       seed=seed, overrides=VARIANTS[base], epochs=FLAGS.epochs,
                       images=FLAGS.num_images, steps=results.global_step,
                       pretrain_seconds=seconds, final_loss=results.final_loss,
                       hardware=hardware, backend=keras.backend.backend(),
                       history=results.history, **metrics)
            with open(row_path, "w") as f:
                json.dump(row, f, indent=1, default=float)
            print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
            keras.backend.clear_session()
        curves[name] = row.pop("history")
        rows.append(row)

    random_path = os.path.join(rows_dir, "random_init.json")
    if os.path.exists(random_path):
        with open(random_path) as f:
            rows.append(json.load(f))
    else:
        encoder = random_encoder("vit_tiny_patch4_32", seed=FLAGS.seed, num_layers=FLAGS.num_layers)
        rows.append(dict(variant="random init", masking="-", contrastive="-", **{"lambda": "-"},
                         seed=FLAGS.seed, epochs=0, images=0, steps=0, pretrain_seconds=0.0,
                         final_loss=None, hardware=hardware, backend=keras.backend.backend(),
                         **evaluate_encoder(encoder, data_dir, FLAGS.seed)))
        with open(random_path, "w") as f:
            json.dump(rows[-1], f, indent=1, default=float)
    summary = {
        "rows": rows,
        "synthetic_history": synthetic,
        "cifar10_history": curves,
        "study_seconds": time.time() - study_start,
        "pretrain_seconds_total": sum(r["pretrain_seconds"] for r in rows),
        "flags": {k: FLAGS[k].value for k in ("epochs", "num_images", "num_layers", "batch_size", "blr",
                                              "warmup_epochs", "points_per_epoch", "probe_train_images", "probe_epochs", "seed",
                                              "synthetic_epochs", "synthetic_images")},
        "eval_split": "cifar10_jpeg train[45000:] (5,000 held-out images)",
    }
    write_outputs(out, summary)
    return 0


def plot_curves(out, synthetic, cifar10, points_per_epoch):
    """curves_synthetic.png (reconstruction, contrastive, foreground lift of
    MAE and ccMIM on synthetic_objects) and curves_cifar10.png (both losses
    of every variant), from the runs' per-point histories."""
    from benchmarks.line_plot import line_plot

    x_label = f"x: points, {points_per_epoch} per epoch"
    with_contrast = lambda h: any(h.get("contrastive_loss", []))  # noqa: E731
    if synthetic:
        line_plot(os.path.join(out, "curves_synthetic.png"), [
            ("reconstruction loss", {n: h.get("reconstruction_loss", []) for n, h in synthetic.items()}),
            ("contrastive loss", {n: h["contrastive_loss"] for n, h in synthetic.items() if with_contrast(h)}),
            ("foreground lift", {n: h.get("foreground_lift", []) for n, h in synthetic.items()}),
        ], x_label=x_label)
    if cifar10:
        line_plot(os.path.join(out, "curves_cifar10.png"), [
            ("reconstruction loss", {n: h.get("reconstruction_loss", []) for n, h in cifar10.items()}),
            ("contrastive loss", {n: h["contrastive_loss"] for n, h in cifar10.items() if with_contrast(h)}),
        ], x_label=x_label)


def write_outputs(out, summary):
    """results.json, results.md and the curve PNGs; prints the table."""
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    plot_curves(out, summary["synthetic_history"], summary["cifar10_history"],
                summary["flags"].get("points_per_epoch", 1))
    table = markdown_table(summary["rows"])
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"study wall time: {summary['study_seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main)
