"""Measures the margins of test_pretraining_helps.py: the gain of the test's
pretraining run (`PRETRAIN_RUN` in conftest) over a random encoder, for
several seeds, with the test's own protocol. Not a test; run it when
PRETRAIN_RUN changes, from the repository root:

    python -m tests.evaluation.measure_margins --seeds=0,1,2 \
        --output=benchmarks/results/pretraining_helps_margins.json
"""

import json
import os
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "Pretraining seeds.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")


def main(argv):
    del argv
    from keras_ccmim.evaluation import load_encoder, random_encoder
    from keras_ccmim.training import pretrain
    from tests.evaluation.conftest import PRETRAIN_ENCODER, PRETRAIN_RUN
    from tests.evaluation.pretraining_protocol import load_splits
    from tests.evaluation.pretraining_protocol import measure as measure_with

    train, evaluation = load_splits()

    def measure(encoder):
        return measure_with(encoder, train, evaluation)

    random = measure(random_encoder(seed=0, **PRETRAIN_ENCODER))
    rows = []
    for seed in FLAGS.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            results = pretrain(dict(PRETRAIN_RUN, seed=int(seed), workdir=os.path.join(tmp, "run")))
            seconds = time.time() - start
            pretrained = measure(load_encoder(results.workdir))
        gains = {k: pretrained[k] - random[k] for k in random}
        rows.append({"seed": int(seed), "pretrained": pretrained, "gain": gains,
                     "mask_selectivity": results.mask_selectivity, "pretrain_seconds": seconds})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"random": random, "runs": rows,
               "min_gain": {k: min(r["gain"][k] for r in rows) for k in random}}
    print(json.dumps(summary["min_gain"]))
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
