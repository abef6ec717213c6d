"""Why the two importance scores rank patches differently, on trained models.

For each trained pretrainer (the workdirs that `selectivity_study.py
--sweep=mask_ratio` leaves under its --output_dir, or any --runs_dir whose
subfolders hold `pretrainer.keras`, `config.json` and `row.json`), on the
run's own fixed batch of `synthetic_objects` images with their foreground
masks:

* the per-head [CLS]-query logits `z[l, h, j] = q_0 . k_j / sqrt(Dh)` over
  the N patch keys at every block, computed from the blocks' own layers
  (their head mean is checked against `ViTEncoder.cls_attention`), and the
  per-head softmax attention over all keys;
* the logit score's ranking, `mean over (l, h) of z`: since
  `log softmax_N(z[l, h])_j = z[l, h, j] - const`, this is the ranking of
  the geometric mean over (l, h) of the per-head distributions over the
  patches (checked: the same top-K); the probability score's ranking,
  `sum_l mean_h p[l, h, j]`, an arithmetic mean of per-head probabilities;
* top-K selectivity of both scores (0 random, 1 foreground first) at
  K = N * r for each --mask_ratios, and the foreground share of the N - K
  patches each leaves visible against the foreground share of all patches;
* the per-head z-spread: each row `z[l, h, :]` standardised over the N
  patches, then per patch the standard deviation over the heads, the
  highest and the lowest head's value (each a mean over the blocks),
  averaged over object patches and over background patches.

The score's scale (`score_scale`) multiplies every logit by one constant,
so neither ranking depends on it.

Writes score_ranking.json, score_ranking.md and score_ranking.png to
--output_dir.

    python -m benchmarks.score_ranking --runs_dir=runs/selectivity_mask_ratio \
        --output_dir=benchmarks/results/selectivity_study/mask_ratio
"""

import json
import os
import time

import numpy as np
from absl import app, flags

from benchmarks.hardware import hardware_label

FLAGS = flags.FLAGS
flags.DEFINE_string("runs_dir", "runs/selectivity_mask_ratio",
                    "Folder whose subfolders are trained runs (selectivity_study.py workdirs).")
flags.DEFINE_string("output_dir", None, "Where the JSON, table and PNG go (default: --runs_dir).")
flags.DEFINE_list("mask_ratios", ["0.125", "0.25", "0.5", "0.75"],
                  "Mask ratios r whose K = round(N * r) the top-K selectivity is measured at.")

SCORES = ("probabilities", "logits")


def per_head_attention(encoder, images):
    """`(logits, probabilities)`, each `[L, B, H, N]` float64: the [CLS]
    query's scaled logits over the N patch keys, and its softmax attention
    over all keys restricted to the patch keys, at every block."""
    from keras import ops

    tokens = encoder.embed(images)
    cls = ops.broadcast_to(encoder.cls_token, (tokens.shape[0], 1, encoder.hidden_dim))
    x = ops.concatenate([ops.cast(cls, tokens.dtype), tokens], axis=1)
    logits, probabilities = [], []
    for block in encoder.blocks:
        qkv = np.asarray(ops.convert_to_numpy(block.qkv(block.norm1(x))), "float64")
        b, t, _ = qkv.shape
        d, h, dh = block.hidden_dim, block.num_heads, block.head_dim
        q = qkv[:, 0, :d].reshape(b, h, dh)
        k = qkv[:, :, d:2 * d].reshape(b, t, h, dh)
        row = np.einsum("bhd,bthd->bht", q, k) / np.sqrt(dh)
        weights = np.exp(row - row.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        logits.append(row[..., 1:])
        probabilities.append(weights[..., 1:])
        x = block(x)
    return np.stack(logits), np.stack(probabilities)


def top_k_mask(rank, k):
    """`[B, N]` 0/1 mask of the `k` highest values of each row."""
    order = np.argsort(-rank, axis=-1, kind="stable")
    mask = np.zeros_like(rank)
    np.put_along_axis(mask, order[:, :k], 1.0, axis=-1)
    return mask


def head_spread(logits, foreground):
    """Per-head z-spread, highest and lowest head, on objects and background."""
    z = (logits - logits.mean(-1, keepdims=True)) / logits.std(-1, keepdims=True)
    per_patch = {
        "spread": z.std(axis=2).mean(axis=0),
        "highest_head": z.max(axis=2).mean(axis=0),
        "lowest_head": z.min(axis=2).mean(axis=0),
        "head_mean": z.mean(axis=2).mean(axis=0),
    }
    fg = foreground.astype(bool)
    return {name: {"object": float(v[fg].mean()), "background": float(v[~fg].mean())}
            for name, v in per_patch.items()}


def analyse(workdir, mask_ratios):
    import keras

    import keras_ccmim  # noqa: F401  (registers the classes the .keras file names)
    from keras_ccmim import data
    from keras_ccmim.layers.patching import patchify
    from keras_ccmim.masking_metrics import masking_metrics

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    with open(os.path.join(workdir, "row.json")) as f:
        row = json.load(f)
    model = keras.saving.load_model(os.path.join(workdir, "pretrainer.keras"))
    dataset = data.make_dataset(
        config["dataset"], split=config["split"], batch_size=config["lift_images"],
        image_size=config["image_size"], data_dir=config["data_dir"], training=False,
        seed=config["seed"], num_images=config["num_images"])
    images, extras = next(iter(dataset.take(1)))
    images = images.numpy()
    # A patch is foreground when at least half its pixels are (as the study's).
    pixels = extras["foreground"].numpy().astype("float32")[..., None]
    fraction = keras.ops.mean(patchify(pixels, model.encoder.patch_size), axis=-1)
    fg = (keras.ops.convert_to_numpy(fraction) >= 0.5).astype("float64")

    encoder = model.encoder
    logits, probabilities = per_head_attention(encoder, images)
    layers = range(encoder.num_layers)
    check = encoder.cls_attention(encoder.embed(images), layers, kind="logits")
    check_gap = max(float(np.abs(keras.ops.convert_to_numpy(c) - logits[i].mean(axis=1)).max())
                    for i, c in enumerate(check))
    ranks = {"logits": logits.mean(axis=(0, 2)), "probabilities": probabilities.mean(axis=2).sum(0)}
    shifted = logits - np.log(np.exp(logits).sum(-1, keepdims=True))  # log softmax over N
    geometric = shifted.mean(axis=(0, 2))

    n = fg.shape[1]
    result = {
        "label": row["label"], "trained_with": row["overrides"],
        "study_score_selectivity": row.get("score_selectivity_final"),
        "foreground_share": float(fg.mean()), "num_patches": n,
        "cls_attention_check_max_abs": check_gap,
        "top_k_selectivity": {s: {} for s in SCORES},
        "visible_foreground_share": {s: {} for s in SCORES},
        "geometric_mean_top_k_equal": True,
        "heads": head_spread(logits, fg),
    }
    for ratio in mask_ratios:
        k = int(round(n * float(ratio)))
        for score in SCORES:
            mask = top_k_mask(ranks[score], k)
            result["top_k_selectivity"][score][str(k)] = masking_metrics(mask, fg)["mask_selectivity"]
            visible = 1.0 - mask
            result["visible_foreground_share"][score][str(k)] = float((visible * fg).sum() / visible.sum())
        same = np.array_equal(top_k_mask(geometric, k), top_k_mask(ranks["logits"], k))
        result["geometric_mean_top_k_equal"] &= bool(same)
    keras.backend.clear_session()
    return result


def tables(models, ks):
    head = " | ".join(f"top-{k}" for k in ks)
    visible = models[0]["num_patches"] - int(ks[-1])
    lines = [f"| trained with | score | {head} | object share of the {visible} patches left "
             f"visible at K={ks[-1]} (of all patches) |",
             "|---|---|" + "---|" * len(ks) + "---|"]
    for m in models:
        for score in SCORES:
            cells = " | ".join(f"{m['top_k_selectivity'][score][k]:+.3f}" for k in ks)
            visible = m["visible_foreground_share"][score][ks[-1]]
            lines.append(f"| {m['label']} | {score} | {cells} | "
                         f"{visible:.3f} ({m['foreground_share']:.3f}) |")
    lines += ["", "| trained with | z-spread over heads: object / background | highest head | "
              "lowest head | head mean |", "|---|---|---|---|---|"]
    for m in models:
        h = m["heads"]
        cells = " | ".join(f"{h[name]['object']:+.2f} / {h[name]['background']:+.2f}"
                           for name in ("spread", "highest_head", "lowest_head", "head_mean"))
        lines.append(f"| {m['label']} | {cells} |")
    return "\n".join(lines)


def plot(path, models, ks):
    from benchmarks.line_plot import line_plot

    panels = [(f"top-K selectivity, trained {m['label']}",
               {score: [m["top_k_selectivity"][score][k] for k in ks] for score in SCORES})
              for m in models]
    line_plot(path, panels, x_label=f"x: K = {', '.join(ks)} of {models[0]['num_patches']}",
              columns=3)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import keras

    runs_dir = os.path.abspath(FLAGS.runs_dir)
    out = os.path.abspath(FLAGS.output_dir or runs_dir)
    if not os.path.isdir(runs_dir):
        raise app.UsageError(f"--runs_dir {FLAGS.runs_dir} is not a folder; run "
                             "benchmarks/selectivity_study.py --sweep=mask_ratio first.")
    workdirs = sorted(
        os.path.join(runs_dir, name) for name in os.listdir(runs_dir)
        if os.path.exists(os.path.join(runs_dir, name, "pretrainer.keras"))
        and os.path.exists(os.path.join(runs_dir, name, "row.json")))
    if not workdirs:
        raise app.UsageError(f"No trained run (pretrainer.keras and row.json) under {FLAGS.runs_dir}.")
    start = time.time()
    models = [analyse(workdir, FLAGS.mask_ratios) for workdir in workdirs]
    # In the study's order: by the score trained with, then by mask ratio.
    models.sort(key=lambda m: (SCORES.index(m["trained_with"].get("score_from", SCORES[0])),
                               m["trained_with"].get("mask_ratio", 0.75)))
    ks = list(models[0]["top_k_selectivity"]["logits"])
    os.makedirs(out, exist_ok=True)
    summary = {"models": models, "mask_ratios": FLAGS.mask_ratios,
               "seconds": time.time() - start, "hardware": hardware_label(),
               "backend": keras.backend.backend()}
    with open(os.path.join(out, "score_ranking.json"), "w") as f:
        json.dump(summary, f, indent=1)
    table = tables(models, ks)
    with open(os.path.join(out, "score_ranking.md"), "w") as f:
        f.write(table + "\n")
    plot(os.path.join(out, "score_ranking.png"), models, ks)
    print(table)
    print(f"{len(models)} models in {summary['seconds']:.0f} s on {summary['hardware']}")
    return 0


if __name__ == "__main__":
    app.run(main)
