"""Selectivity study: how much each masking rule masks the objects, and what
it costs, on the built-in `synthetic_objects` data (a known foreground).

Pretrains the same small ccMIM model (importance masking + InfoNCE) once per
masking setting and logs, every few steps, `foreground_lift`, its ceiling
`foreground_lift_max` and `mask_selectivity` (0 random, 1 foreground first)
on a fixed batch, with the reconstruction and contrastive losses:

  for score_from in {probabilities, logits}, score_layers in {all, last}:
    importance sampling at T_s = 1, 0.25, 0.1 (and 0.5 for the default
    score, probabilities/all);
    importance sampling with T_s annealed 1 -> --schedule_end (half cosine);
    deterministic top-K (masking=importance);
  random masking (the reference; selectivity 0 by construction).

`--sweep=mask_ratio` instead trains importance sampling at T_s = 1 with
each score (`--score_from`, all layers) at each `--mask_ratios`; its
workdirs keep the trained models, which `benchmarks/score_ranking.py` reads
to rank patches by both scores at every K.

Writes results.json (every run's curves and summary), results.md (the
table) and selectivity.png (one panel per score definition, plus the
losses) to --output_dir.

    python -m benchmarks.selectivity_study
    python -m benchmarks.selectivity_study --sweep=mask_ratio \
        --output_dir=runs/selectivity_mask_ratio
"""

import json
import os
import re
import time

from absl import app, flags


from benchmarks.hardware import hardware_label  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/selectivity_study", "Where runs and results go.")
flags.DEFINE_list("temperatures", ["1", "0.25", "0.1"], "Constant T_s values of every score.")
flags.DEFINE_list("default_score_temperatures", ["0.5"],
                  "More constant T_s values for the default score (probabilities/all).")
flags.DEFINE_float("schedule_end", 0.1, "T_s the schedule anneals to from 1.")
flags.DEFINE_list("score_from", ["probabilities", "logits"], "Score definitions.")
flags.DEFINE_list("score_layers", ["all", "last"], "Scoring layers.")
flags.DEFINE_enum("sweep", "masking", ["masking", "mask_ratio"],
                  "masking: every masking setting at mask ratio 0.75; mask_ratio: T_s = 1 "
                  "with each --score_from over all layers at each --mask_ratios.")
flags.DEFINE_list("mask_ratios", ["0.25", "0.5", "0.75"], "Mask ratios of --sweep=mask_ratio.")
flags.DEFINE_integer("num_images", 1024, "synthetic_objects images.")
flags.DEFINE_integer("num_layers", 4, "Encoder blocks (ViT-T/4 width 192).")
flags.DEFINE_integer("lift_images", 256, "Images of the fixed batch the metrics are measured on.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_integer("points", 12, "Logged points (Keras epochs) per run.")
flags.DEFINE_integer("steps_per_point", 8, "Training steps between logged points.")
flags.DEFINE_float("blr", 1.5e-3, "Base learning rate (the demo's).")
flags.DEFINE_integer("seed", 0, "Seed of every run.")
flags.DEFINE_boolean("replot", False, "Rewrite results.md and the PNG from results.json.")

METRICS = ("foreground_lift", "foreground_lift_max", "mask_selectivity")


def settings():
    """`(label, group, overrides)` of every run."""
    if FLAGS.sweep == "mask_ratio":
        return [(f"{score_from}/all r={ratio}", f"{score_from}/all",
                 dict(score_from=score_from, score_layers="all", mask_ratio=float(ratio)))
                for score_from in FLAGS.score_from for ratio in FLAGS.mask_ratios]
    runs = []
    for score_from in FLAGS.score_from:
        for layers in FLAGS.score_layers:
            group = f"{score_from}/{layers}"
            common = dict(score_from=score_from, score_layers=layers)
            temperatures = list(FLAGS.temperatures)
            if (score_from, layers) == ("probabilities", "all"):
                temperatures += FLAGS.default_score_temperatures
            for t in sorted(temperatures, key=float, reverse=True):
                runs.append((f"{group} T={t}", group, dict(common, sampling_temperature=float(t))))
            runs.append((f"{group} T=1->{FLAGS.schedule_end:g}", group, dict(
                common, sampling_temperature=FLAGS.schedule_end, sampling_temperature_start=1.0)))
            runs.append((f"{group} top-K", group, dict(common, masking="importance")))
    runs.append(("random", "random", dict(masking="random")))
    return runs


def run_one(label, overrides, workdir):
    from keras_ccmim.training.config import PretrainConfig
    from keras_ccmim.training.pretrain import pretrain

    config = PretrainConfig(
        preset="vit_tiny_patch4_32", num_layers=FLAGS.num_layers, num_images=FLAGS.num_images, batch_size=FLAGS.batch_size,
        epochs=FLAGS.points, steps_per_epoch=FLAGS.steps_per_point, blr=FLAGS.blr,
        warmup_epochs=max(FLAGS.points // 8, 1) if FLAGS.points > 1 else 0, seed=FLAGS.seed,
        lift_images=FLAGS.lift_images, workdir=workdir, verbose=0, tensorboard_every_steps=0,
        **overrides)
    start = time.time()
    results = pretrain(config)
    seconds = time.time() - start
    history = {k: [float(v) for v in vs] for k, vs in results.history.items()}
    half = len(history["mask_selectivity"]) // 2
    second_half = history["mask_selectivity"][half:]
    scored = history.get("score_selectivity")
    return {
        "label": label, "overrides": overrides, "seconds": seconds, "steps": results.global_step,
        "history": history,
        "final": {m: getattr(results, m) for m in METRICS},
        "random_masking": results.random_masking,
        "selectivity_second_half": sum(second_half) / max(len(second_half), 1),
        "score_selectivity_final": scored[-1] if scored else None,
        "final_reconstruction_loss": history["reconstruction_loss"][-1],
        "final_contrastive_loss": history["contrastive_loss"][-1],
    }


def markdown_table(runs, random_spread=False):
    """The table; `random_spread` adds the standard deviation of random
    masking's selectivity on the same batch at the same K (the noise floor,
    which depends on the mask ratio)."""
    spread = " random masking's selectivity std |" if random_spread else ""
    lines = ["| setting | selectivity (2nd half mean) | final selectivity | final score top-K "
             f"selectivity | final lift / max |{spread} reconstruction loss | contrastive loss | s |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if random_spread else "")]
    for r in runs:
        f = r["final"]
        scored = r.get("score_selectivity_final")
        scored = "-" if scored is None else f"{scored:.3f}"
        cells = f" {r['random_masking']['mask_selectivity']['std']:.3f} |" if random_spread else ""
        lines.append(
            f"| {r['label']} | {r['selectivity_second_half']:.3f} | {f['mask_selectivity']:.3f} | "
            f"{scored} | "
            f"{f['foreground_lift']:.3f} / {f['foreground_lift_max']:.3f} |{cells} "
            f"{r['final_reconstruction_loss']:.4f} | {r['final_contrastive_loss']:.4f} | "
            f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def plot(out, summary):
    from benchmarks.line_plot import line_plot

    runs = summary["runs"]
    reference = {r["label"]: r for r in runs if r["label"] == "random"}
    groups = [g for g in summary["groups"] if g != "random"]
    short = lambda r, g: r["label"][len(g) + 1:] if r["label"].startswith(g) else r["label"]  # noqa: E731
    panels = []
    for group in groups:
        series = {short(r, group): r["history"]["mask_selectivity"]
                  for r in runs if r["group"] == group}
        series.update({k: v["history"]["mask_selectivity"] for k, v in reference.items()})
        panels.append((f"selectivity, {group}", series))
        panels.append((f"score top-K selectivity, {group}", {
            short(r, group): r["history"].get("score_selectivity", [])
            for r in runs if r["group"] == group}))
    first = groups[0] if groups else None
    for loss in ("reconstruction_loss", "contrastive_loss"):
        panels.append((f"{loss.replace('_', ' ')}, {first}", {
            short(r, first): r["history"][loss] for r in runs
            if r["group"] in (first, "random")}))
    path = os.path.join(out, "selectivity.png")
    line_plot(path, panels, x_label=f"x: points, {summary['flags']['steps_per_point']} steps each",
              columns=2)
    return path


def write_outputs(out, summary):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table = markdown_table(summary["runs"],
                           random_spread=summary["flags"].get("sweep") == "mask_ratio")
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table + "\n")
    plot(out, summary)
    print(table)
    print(f"study wall time: {summary['study_seconds']:.0f} s (this call), "
          f"{summary.get('runs_seconds', summary['study_seconds']):.0f} s of runs in all, "
          f"on {summary['hardware']}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    out = os.path.abspath(FLAGS.output_dir)
    if FLAGS.replot:
        with open(os.path.join(out, "results.json")) as f:
            write_outputs(out, json.load(f))
        return 0
    import keras

    os.makedirs(out, exist_ok=True)
    start = time.time()
    runs = []
    groups = []
    for label, group, overrides in settings():
        workdir = os.path.join(out, re.sub(r"[^A-Za-z0-9.=-]+", "_", label))
        row_path = os.path.join(workdir, "row.json")
        if os.path.exists(row_path):  # finished by an earlier, interrupted call
            with open(row_path) as f:
                row = json.load(f)
        else:
            row = run_one(label, overrides, workdir)
            row["group"] = group
            with open(row_path, "w") as f:
                json.dump(row, f, indent=1)
            keras.backend.clear_session()
        groups += [group] if group not in groups else []
        runs.append(row)
        print(json.dumps({k: row[k] for k in ("label", "selectivity_second_half", "final",
                                               "final_reconstruction_loss", "seconds")}), flush=True)
    summary = {
        "runs": runs, "groups": groups, "study_seconds": time.time() - start,
        "runs_seconds": sum(r["seconds"] for r in runs),
        "hardware": hardware_label(), "backend": keras.backend.backend(),
        "flags": {k: FLAGS[k].value for k in (
            "sweep", "mask_ratios", "temperatures", "default_score_temperatures", "schedule_end",
            "score_from", "score_layers", "num_images", "num_layers", "lift_images",
            "batch_size", "points", "steps_per_point", "blr", "seed")},
    }
    write_outputs(out, summary)
    return 0


if __name__ == "__main__":
    app.run(main)
