r"""Kills a pretraining with SIGKILL at random moments, reruns the same command
each time, and compares the final encoder with an uninterrupted run's.

    python -m benchmarks.kill_resume --kills=6 --output=/tmp/kill_resume.json

The run is a tiny ccMIM pretraining (importance sampling, shuffled and
augmented data: a resume that restarts the random draws or the data shows
up in the weights) that checkpoints every step. The first kill comes before
the first checkpoint (as soon as the run has written its config); each
other one when the run has checkpointed a random step of the 24 (sorted),
after a random delay of up to a second, so kills fall during steps, during
saves and after the last step; after the last kill the command runs to its
end. Each kill is recorded with the step of the newest checkpoint the run
had then. Prints one JSON line per event and writes them all to
`--output`.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("kills", 6, "SIGKILLs before the run may finish.")
flags.DEFINE_integer("seed", 0, "Seed of the kill times.")
flags.DEFINE_string("workdir", "/tmp/kill_resume", "Folder of the two runs.")
flags.DEFINE_string("output", None, "JSON file of the results.")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = dict(
    image_size=16, patch_size=4, hidden_dim=32, num_layers=2, num_heads=2,
    decoder_hidden_dim=32, decoder_num_layers=1, decoder_num_heads=2, projection_dim=16,
    num_images=64, batch_size=16, epochs=2, steps_per_epoch=12, warmup_epochs=0.1,
    blr=0.05, checkpoint_every_steps=1, keep_checkpoints=30, lift_images=16, verbose=0,
)


def _command(workdir):
    return [sys.executable, os.path.join(REPO_ROOT, "train", "pretrain.py"),
            f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in RUN.items()]


def _newest_step(workdir):
    try:
        with open(os.path.join(workdir, "checkpoints", "checkpoint.json")) as f:
            return json.load(f)["global_step"]
    except (OSError, ValueError, KeyError):
        return None


def _run(workdir, log):
    with open(log, "a") as out:
        return subprocess.run(_command(workdir), stdout=out, stderr=subprocess.STDOUT).returncode


def _kill_at(workdir, log, wait_for, delay):
    """Starts the command, waits until `wait_for()` holds, then `delay`
    seconds more, and kills it; returns the kill's record."""
    with open(log, "a") as out:
        process = subprocess.Popen(_command(workdir), stdout=out, stderr=subprocess.STDOUT)
        start = time.time()
        while process.poll() is None and not wait_for():
            time.sleep(0.02)
        time.sleep(delay)
        finished = process.poll() is not None
        if not finished:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    return {"event": "finished before the kill" if finished else "SIGKILL",
            "after_s": round(time.time() - start, 2), "newest_checkpoint": _newest_step(workdir),
            "returncode": process.returncode}


def _max_difference(a, b):
    import keras
    import numpy as np

    from keras_ccmim.models import load_encoder

    got, want = load_encoder(a).weights, load_encoder(b).weights
    return max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(x) - keras.ops.convert_to_numpy(y))))
        for x, y in zip(got, want))


def main(argv):
    del argv
    import keras

    rng = random.Random(FLAGS.seed)
    reference = os.path.join(FLAGS.workdir, "uninterrupted")
    killed = os.path.join(FLAGS.workdir, "killed")
    log = os.path.join(FLAGS.workdir, "runs.log")
    os.makedirs(FLAGS.workdir, exist_ok=False)
    events = []

    def record(event):
        event["backend"] = keras.backend.backend()
        events.append(event)
        print(json.dumps(event), flush=True)

    start = time.time()
    assert _run(reference, log) == 0, f"the uninterrupted run failed: see {log}"
    whole = time.time() - start
    record({"event": "uninterrupted run", "seconds": round(whole, 1)})

    config = os.path.join(killed, "config.json")
    # Before the first checkpoint: once the run has written its config.
    record(_kill_at(killed, log, lambda: os.path.exists(config), rng.uniform(0.0, 0.5)))
    total = RUN["epochs"] * RUN["steps_per_epoch"]
    for target in sorted(rng.randint(1, total) for _ in range(FLAGS.kills - 1)):
        def reached(target=target):
            step = _newest_step(killed)
            return step is not None and step >= target
        event = _kill_at(killed, log, reached, rng.uniform(0.0, 1.0))
        record(dict(event, target_step=target))
    assert _run(killed, log) == 0, f"the resumed run failed: see {log}"
    record({"event": "max |encoder weight difference| from the uninterrupted run",
            "value": _max_difference(killed, reference)})
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(events, f, indent=1)


if __name__ == "__main__":
    app.run(main)
