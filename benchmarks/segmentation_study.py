"""Dense transfer study: random init, MAE and ccMIM, each fine-tuned and
linearly probed for semantic segmentation on synthetic_objects_foreground
(figure-ground: background / object).

MAE (random masking, no contrastive term) and ccMIM (the library's
defaults: importance sampling + InfoNCE) are pretrained with the budget of
the key test's pretraining (`PRETRAIN_RUN` in benchmarks/key_pretraining.py:
32 px, patch 8, width 64, 2 blocks, 1000 steps of 64 on 10,000 images),
then every encoder, and a randomly initialised one, goes through the
protocols of `benchmarks/segmentation_protocols.py` with
`keras_ccmim.evaluation.finetune_segmenter` and is scored on the separate "test" split
(mIoU, aAcc and mAcc): `finetune` (a `ViTSegmenter` with the simple feature
pyramid and FPN head, the encoder fine-tuned with layer decay 0.65 and drop
path 0.1, 50 steps of 32) and `linear_probe` (the encoder frozen, the linear
head trained, 400 steps of 64). Each is repeated for each of --seeds (the
random encoder is initialised with seed 0), so the table gives the mean and
the spread.

Writes results.json and results.md (the README's "Dense transfer" table,
with the wall time and the CPU) to --output_dir; pretraining workdirs go
to --work_dir.

    python -m benchmarks.segmentation_study \
        --output_dir=benchmarks/results/segmentation
"""

import json
import os
import time

from absl import app, flags


from benchmarks.hardware import hardware_label  # noqa: E402
from benchmarks.segmentation_protocols import PROTOCOLS, SCORES, measure  # noqa: E402

ARMS = {
    "random": None,
    "mae": dict(masking="random", contrastive="none"),
    "ccmim": dict(),
}

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/segmentation_study", "Where results go.")
flags.DEFINE_string("work_dir", None, "Where pretraining workdirs go (default "
                    "<output_dir>/runs).")
flags.DEFINE_list("arms", list(ARMS), "Arms to run.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds of every arm.")
flags.DEFINE_list("protocols", ["finetune", "linear_probe"],
                  "Protocols of benchmarks/segmentation_protocols.py to run.")
flags.DEFINE_integer("pretrain_steps", 1000, "Pretraining steps (PRETRAIN_RUN: 1000).")
flags.DEFINE_integer("pretrain_images", 10000, "Pretraining images.")
flags.DEFINE_integer("segment_eval_images", 500, "Scored images (test split).")
flags.DEFINE_integer("segment_steps_per_epoch", None, "Override every protocol's steps per "
                     "epoch (2 epochs; for a smoke run).")
flags.DEFINE_integer("segment_train_images", None, "Override every protocol's training "
                     "images (for a smoke run).")
flags.DEFINE_integer("batch_size", None, "Override every protocol's batch size.")
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
        "| encoder | pretraining | protocol | mIoU | aAcc | mAcc | runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, protocols in summary["arms"].items():
        budget = "none" if arm == "random" else f"{summary['pretrain_steps']} steps"
        for protocol, row in protocols["protocols"].items():
            cells = [f"{row['mean'][k]:.1f} ± {row['spread'][k]:.1f}" for k in SCORES]
            lines.append(f"| {arm} | {budget} | {protocol} | {' | '.join(cells)} "
                         f"| {len(row['runs'])} |")
    lines.append("")
    described = "; ".join(
        f"{name}: {p['epochs'] * p['steps_per_epoch']} steps of {p['batch_size']}"
        + (", encoder frozen, linear head" if p.get("freeze_encoder") else
           ", FPN head, encoder fine-tuned")
        for name, p in summary["protocols"].items())
    lines.append(
        f"Mean ± half the range over seeds {summary['seeds']} ({described}) at 32 px on "
        f"synthetic_objects_foreground, scored on {summary['eval_images']} test images. "
        f"Wall time {summary['wall_seconds'] / 60:.1f} min on {summary['hardware']} "
        f"({summary['backend']} backend)."
    )
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}.")
    unknown = [a for a in FLAGS.arms if a not in ARMS]
    if unknown:
        raise app.UsageError(f"Unknown arms {unknown}; choose from {list(ARMS)}.")
    unknown = [p for p in FLAGS.protocols if p not in PROTOCOLS]
    if unknown:
        raise app.UsageError(f"Unknown protocols {unknown}; choose from {list(PROTOCOLS)}.")
    import keras

    start = time.time()
    out = FLAGS.output_dir
    work_dir = FLAGS.work_dir or os.path.join(out, "runs")
    os.makedirs(out, exist_ok=True)
    seeds = [int(s) for s in FLAGS.seeds]
    overrides = {k: v for k, v in (("steps_per_epoch", FLAGS.segment_steps_per_epoch),
                                   ("train_num_images", FLAGS.segment_train_images),
                                   ("batch_size", FLAGS.batch_size)) if v is not None}
    if "steps_per_epoch" in overrides:
        overrides["check_every_steps"] = overrides["steps_per_epoch"]
    protocols = {p: dict(PROTOCOLS[p], **overrides) for p in FLAGS.protocols}
    arms = {}
    for arm in FLAGS.arms:
        encoder, pretrain_seconds = encoder_of(arm, work_dir)
        arms[arm] = {"pretrain_seconds": pretrain_seconds, "protocols": {}}
        for protocol in FLAGS.protocols:
            runs = []
            for seed in seeds:
                begin = time.time()
                scores = measure(encoder, protocol, seed=seed,
                                 eval_num_images=FLAGS.segment_eval_images, **overrides)
                runs.append({"seed": seed, **scores, "seconds": time.time() - begin})
                print(json.dumps({"arm": arm, "protocol": protocol, **runs[-1]}), flush=True)
            values = {k: [r[k] for r in runs] for k in SCORES}
            arms[arm]["protocols"][protocol] = {
                "runs": runs,
                "mean": {k: sum(v) / len(v) for k, v in values.items()},
                "spread": {k: (max(v) - min(v)) / 2 for k, v in values.items()},
            }
    summary = {
        "arms": arms, "seeds": seeds, "pretrain_steps": FLAGS.pretrain_steps,
        "pretrain_images": FLAGS.pretrain_images, "eval_images": FLAGS.segment_eval_images,
        "protocols": protocols,
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
