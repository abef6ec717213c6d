"""Measures the margins of test_segmentation_helps.py: the gain in the
segmentation protocol (`segmentation_protocol.SEGMENT_RUN`) of the test's
pretrained encoder (`PRETRAIN_RUN` in conftest) over a random one, for
several fine-tuning seeds (the random encoder's initialisation seed is the
same seed). Not a test; run it when either run changes, from the
repository root:

    python -m tests.evaluation.measure_segmentation_margins --seeds=0,1,2 \
        --output=benchmarks/results/segmentation_helps_margins.json

--workdir reuses a finished PRETRAIN_RUN workdir instead of pretraining.
"""

import json
import os
import platform
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.")
flags.DEFINE_string("workdir", None, "A finished PRETRAIN_RUN workdir (default: pretrain).")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")


def main(argv):
    del argv
    import keras

    from keras_ccmim.evaluation import load_encoder, random_encoder
    from keras_ccmim.training import pretrain
    from tests.evaluation.conftest import PRETRAIN_ENCODER, PRETRAIN_RUN
    from tests.evaluation.segmentation_protocol import SCORES, SEGMENT_RUN, measure

    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = FLAGS.workdir
        if workdir is None:
            workdir = pretrain(dict(PRETRAIN_RUN, workdir=os.path.join(tmp, "run"))).workdir
        pretrained_encoder = load_encoder(workdir)
        rows = []
        for seed in (int(s) for s in FLAGS.seeds):
            pretrained = measure(pretrained_encoder, seed)
            random = measure(random_encoder(seed=seed, **PRETRAIN_ENCODER), seed)
            rows.append({"seed": seed, "pretrained": pretrained, "random": random,
                         "gain": {k: pretrained[k] - random[k] for k in SCORES}})
            print(json.dumps(rows[-1]), flush=True)
    summary = {
        "backend": keras.backend.backend(), "machine": platform.processor() or platform.machine(),
        "segment_run": SEGMENT_RUN, "runs": rows, "seconds": time.time() - start,
        "min_gain": {k: min(r["gain"][k] for r in rows) for k in SCORES},
        "max_gain": {k: max(r["gain"][k] for r in rows) for k in SCORES},
    }
    print(json.dumps({"min_gain": summary["min_gain"], "max_gain": summary["max_gain"]}))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
