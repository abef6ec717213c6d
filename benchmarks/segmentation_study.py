"""Dense transfer study: random init, MAE and ccMIM, each fine-tuned for
semantic segmentation on synthetic_objects_foreground (figure-ground:
background / object; --dataset=synthetic_objects for its 11 classes).

MAE (random masking, no contrastive term) and ccMIM (the library's
defaults: importance sampling + InfoNCE) are pretrained with the budget of
the key test's pretraining (`PRETRAIN_RUN` in benchmarks/key_pretraining.py:
32 px, patch 8, width 64, 2 blocks, 1000 steps of 64 on 10,000 images),
then every encoder, and a randomly initialised one, is fine-tuned with
`keras_ccmim.evaluation.segment` (a `ViTSegmenter`: 4 blocks, simple
feature pyramid, FPN head; layer decay 0.65, drop path 0.1) and scored on
the separate "test" split: mIoU, aAcc and mAcc. Fine-tuning is repeated
for each of --seeds, so the table gives the mean and the spread.

Writes results.json and results.md (the README's "Dense transfer" table,
with the wall time and the CPU) to --output_dir; pretraining workdirs go
to --work_dir.

    python benchmarks/segmentation_study.py \
        --output_dir=benchmarks/results/segmentation
"""

import json
import os
import time

from absl import app, flags


from benchmarks.hardware import hardware_label  # noqa: E402

ARMS = {
    "random": None,
    "mae": dict(masking="random", contrastive="none"),
    "ccmim": dict(),
}
SCORES = ("miou", "aacc", "macc")

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/segmentation_study", "Where results go.")
flags.DEFINE_string("work_dir", None, "Where pretraining workdirs go (default "
                    "<output_dir>/runs).")
flags.DEFINE_list("arms", list(ARMS), "Arms to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds of every arm.")
flags.DEFINE_string("dataset", "synthetic_objects_foreground", "synthetic_objects_foreground "
                    "(background / object) or synthetic_objects (background + 10 shapes).")
flags.DEFINE_integer("pretrain_steps", 1000, "Pretraining steps (PRETRAIN_RUN: 1000).")
flags.DEFINE_integer("pretrain_images", 10000, "Pretraining images.")
flags.DEFINE_integer("segment_epochs", 2, "Segmentation fine-tuning epochs.")
flags.DEFINE_integer("segment_steps_per_epoch", 25, "Steps per fine-tuning epoch.")
flags.DEFINE_integer("segment_train_images", 2000, "Fine-tuning images (train split).")
flags.DEFINE_integer("segment_eval_images", 500, "Scored images (test split).")
flags.DEFINE_integer("batch_size", 32, "Fine-tuning batch size.")
flags.DEFINE_float("blr", 1e-3, "Fine-tuning base lr (lr = blr * batch / 16).")
flags.DEFINE_list("workdirs", [], "ARM=WORKDIR pairs: finished pretrainings of exactly this "
                  "arm's config to reuse instead of pretraining (e.g. the test's ccMIM run).")


def pretrain_config(arm, workdir):
    from benchmarks.key_pretraining import PRETRAIN_RUN

    config = dict(PRETRAIN_RUN, **ARMS[arm])
    steps = int(FLAGS.pretrain_steps)
    config.update(workdir=workdir, num_images=FLAGS.pretrain_images, epochs=2,
                  steps_per_epoch=max(steps // 2, 1),
                  warmup_epochs=min(PRETRAIN_RUN["warmup_epochs"], 1.0))
    return config


def encoder_of(arm, work_dir):
    """`(encoder, pretraining seconds)` of an arm."""
    from keras_ccmim.evaluation import load_encoder, random_encoder
    from keras_ccmim.training import pretrain
    from benchmarks.key_pretraining import PRETRAIN_ENCODER

    if ARMS[arm] is None:
        return random_encoder(seed=0, **PRETRAIN_ENCODER), 0.0
    reuse = dict(pair.split("=", 1) for pair in FLAGS.workdirs)
    if arm in reuse:
        saved = os.path.join(reuse[arm], "config.json")
        with open(saved) as f:
            config = json.load(f)
        wanted = pretrain_config(arm, reuse[arm])
        differ = [k for k, v in wanted.items() if k != "workdir" and k in config
                  and config[k] != v]
        if differ:
            raise app.UsageError(f"--workdirs {arm}={reuse[arm]} was pretrained with other "
                                 f"{differ}; pass a run of this arm's config or drop it.")
        with open(os.path.join(reuse[arm], "results.json")) as f:
            seconds = json.load(f).get("seconds")
        return load_encoder(reuse[arm]), seconds
    start = time.time()
    results = pretrain(pretrain_config(arm, os.path.join(work_dir, arm)))
    return load_encoder(results.workdir), time.time() - start


def markdown(summary):
    lines = [
        "| encoder | pretraining | mIoU | aAcc | mAcc | fine-tunings |",
        "|---|---|---|---|---|---|",
    ]
    for arm, row in summary["arms"].items():
        cells = [f"{row['mean'][k]:.1f} ± {row['spread'][k]:.1f}" for k in SCORES]
        budget = "none" if arm == "random" else f"{summary['pretrain_steps']} steps"
        lines.append(f"| {arm} | {budget} | {' | '.join(cells)} | {len(row['runs'])} |")
    lines.append("")
    lines.append(
        f"Mean ± half the range over fine-tuning seeds {summary['seeds']}; "
        f"{summary['segment']['epochs'] * summary['segment']['steps_per_epoch']} fine-tuning "
        f"steps of {summary['segment']['batch_size']} at 32 px on {summary['segment']['dataset']}, "
        f"scored on "
        f"{summary['segment']['eval_images']} test images. Wall time "
        f"{summary['wall_seconds'] / 60:.1f} min on {summary['hardware']} "
        f"({summary['backend']} backend)."
    )
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    unknown = [a for a in FLAGS.arms if a not in ARMS]
    if unknown:
        raise app.UsageError(f"Unknown arms {unknown}; choose from {list(ARMS)}.")
    import keras

    from keras_ccmim.evaluation.segment import segment

    start = time.time()
    out = FLAGS.output_dir
    work_dir = FLAGS.work_dir or os.path.join(out, "runs")
    os.makedirs(out, exist_ok=True)
    seeds = [int(s) for s in FLAGS.seeds]
    segment_args = dict(
        dataset=FLAGS.dataset, image_size=32, train_num_images=FLAGS.segment_train_images,
        eval_num_images=FLAGS.segment_eval_images, epochs=FLAGS.segment_epochs,
        steps_per_epoch=FLAGS.segment_steps_per_epoch, warmup_epochs=0.5,
        batch_size=FLAGS.batch_size, base_learning_rate=FLAGS.blr, head_dim=32,
        check_every_steps=FLAGS.segment_steps_per_epoch,
    )
    arms = {}
    for arm in FLAGS.arms:
        encoder, pretrain_seconds = encoder_of(arm, work_dir)
        runs = []
        for seed in seeds:
            begin = time.time()
            result = segment(encoder, seed=seed, **segment_args)
            runs.append({"seed": seed, **{k: getattr(result, k) for k in SCORES},
                         "seconds": time.time() - begin})
            print(json.dumps({"arm": arm, **runs[-1]}), flush=True)
        values = {k: [r[k] for r in runs] for k in SCORES}
        arms[arm] = {
            "runs": runs, "pretrain_seconds": pretrain_seconds,
            "mean": {k: sum(v) / len(v) for k, v in values.items()},
            "spread": {k: (max(v) - min(v)) / 2 for k, v in values.items()},
        }
    summary = {
        "arms": arms, "seeds": seeds, "pretrain_steps": FLAGS.pretrain_steps,
        "pretrain_images": FLAGS.pretrain_images,
        "segment": {"dataset": FLAGS.dataset, "epochs": FLAGS.segment_epochs,
                    "steps_per_epoch": FLAGS.segment_steps_per_epoch,
                    "batch_size": FLAGS.batch_size, "train_images": FLAGS.segment_train_images,
                    "eval_images": FLAGS.segment_eval_images, "blr": FLAGS.blr},
        "backend": keras.backend.backend(), "hardware": hardware_label(),
        "wall_seconds": time.time() - start,
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table = markdown(summary)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(table)
    print(table)
    return 0


if __name__ == "__main__":
    app.run(main)
