"""Measures the margins of test_segmentation_helps.py: the scores in the
linear segmentation probe (`benchmarks.segmentation_protocols.LINEAR_PROBE`)
of the test's pretrained encoder (`PRETRAIN_RUN` in conftest) and of random
ones, for several seeds (the random encoder's initialisation seed is the
probe's), with the smallest gain and each arm's seed-to-seed range. Not a
test; run it under each backend when either run changes, from the
repository root:

    python -m tests.evaluation.measure_segmentation_margins --seeds=0,1,2 \
        --output=benchmarks/results/segmentation_helps_margins.json

--output keeps the other backends' entries of an existing file (one entry
per backend).

--workdir reuses a finished PRETRAIN_RUN workdir instead of pretraining.
"""

import json
import os
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Probe seeds.")
flags.DEFINE_string("workdir", None, "A finished PRETRAIN_RUN workdir (default: pretrain).")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")


def main(argv):
    del argv
    import keras

    from benchmarks.hardware import hardware_label
    from benchmarks.segmentation_protocols import LINEAR_PROBE, SCORES, measure
    from keras_ccmim.evaluation import load_encoder, random_encoder
    from keras_ccmim.training import pretrain
    from tests.evaluation.conftest import PRETRAIN_ENCODER, PRETRAIN_RUN

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = FLAGS.workdir
        if workdir is None:
            workdir = pretrain(dict(PRETRAIN_RUN, workdir=os.path.join(tmp, "run"))).workdir
        pretrained_encoder = load_encoder(workdir)
        rows = []
        for seed in (int(s) for s in FLAGS.seeds):
            pretrained = measure(pretrained_encoder, seed=seed)
            random = measure(random_encoder(seed=seed, **PRETRAIN_ENCODER), seed=seed)
            rows.append({"seed": seed, "pretrained": pretrained, "random": random})
            print(json.dumps(rows[-1]), flush=True)

    def values(arm, k):
        return [r[arm][k] for r in rows]

    summary = {
        "backend": keras.backend.backend(), "hardware": hardware_label(),
        "protocol": LINEAR_PROBE, "runs": rows, "seconds": time.time() - start,
        # The pretrained encoder's worst score over random init's best.
        "min_gain": {k: min(values("pretrained", k)) - max(values("random", k))
                     for k in SCORES},
        "spread": {arm: {k: max(values(arm, k)) - min(values(arm, k)) for k in SCORES}
                   for arm in ("pretrained", "random")},
    }
    print(json.dumps({k: summary[k] for k in ("backend", "min_gain", "spread", "seconds")}))
    if FLAGS.output:
        entries = {}
        if os.path.exists(FLAGS.output):
            with open(FLAGS.output) as f:
                entries = json.load(f)
            if "backends" not in entries:  # an older layout: one run, replaced
                entries = {}
        entries.setdefault("backends", {})[summary["backend"]] = summary
        with open(FLAGS.output, "w") as f:
            json.dump(entries, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
