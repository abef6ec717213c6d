"""Several processes on localhost: JAX through `keras.distribution.initialize`
(2 processes, 1 CPU device each, gloo collectives) against one process on the
same global batch and seed, then a killed run that both processes resume;
TensorFlow's `MultiWorkerMirroredStrategy` with `TF_CONFIG` and 2 workers.

Each test starts its own processes, so it runs only in the session of its
backend (CI runs the suite once per backend)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import pytest

from tests.training.conftest import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow

BACKEND = keras.backend.backend()
STEPS = 10
KILLED_AFTER = 5

# Prints the loss of every step (from the epoch's running mean) in process 0;
# with CCMIM_TEST_STALL=<process id> that process stops after step STALL_AT
# (every process runs the same callbacks up to there: a computation on the
# global arrays waits for all of them), to be killed.
_WORKER = r"""
import json, os, sys, time
import keras
from keras_ccmim.cli.console import run_messages_to_stdout
from keras_ccmim.training import pretrain
from keras_ccmim.training.distribution import process_index
from keras_ccmim.training.optimizer import training_steps

class Probe(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.start = int(keras.ops.convert_to_numpy(training_steps(self.model.optimizer)))
        self.previous = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        loss = (batch + 1) * mean - batch * self.previous
        self.previous = mean
        step = self.start + batch + 1
        if process_index() == 0:
            print("STEP", step, repr(loss), flush=True)
        stall = os.environ.get("CCMIM_TEST_STALL")
        if stall == str(process_index()) and step == int(os.environ["STALL_AT"]):
            print("STALLED", flush=True)
            time.sleep(600)

with run_messages_to_stdout():  # as the binary shows them
    results = pretrain(json.loads(sys.argv[1]), callbacks=[Probe()])
print("DONE", process_index(), results.global_step, flush=True)
"""


_QUICK_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(config, log_path, **env):
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER, json.dumps(config)],
        cwd=REPO_ROOT,
        # A quick XLA compile (the same in every run compared): compiling,
        # not training, is most of this test's time.
        env=subprocess_env(JAX_PLATFORMS="cpu", XLA_FLAGS=_QUICK_XLA, **env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log_path
    return process


def _finish(processes, timeout=240):
    try:
        for process in processes:
            process.wait(timeout=timeout)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [open(p.log_path).read() for p in processes]


def _steps(text):
    return {
        int(line.split()[1]): float(line.split()[2])
        for line in text.splitlines()
        if line.startswith("STEP ")
    }


def _jax_processes(config, tmp_path, name, **env):
    address = f"localhost:{_free_port()}"
    return [
        _start(
            config,
            tmp_path / f"{name}-{index}.log",
            KERAS_DISTRIBUTION_JOB_ADDRESSES=address,
            KERAS_DISTRIBUTION_NUM_PROCESSES="2",
            KERAS_DISTRIBUTION_PROCESS_ID=str(index),
            **env,
        )
        for index in range(2)
    ]


@pytest.mark.skipif(BACKEND != "jax", reason="multi-process keras.distribution runs on JAX")
def test_two_jax_processes_match_one_and_resume_after_a_kill(tiny_run, tmp_path):
    config = tiny_run(
        batch_size=16, epochs=1, steps_per_epoch=STEPS, warmup_epochs=0.2, num_layers=1,
        checkpoint_every_steps=KILLED_AFTER, tensorboard_every_steps=0,
    )
    # One process, one device, the same global batch and seed.
    reference = _start(
        dict(config, workdir=str(tmp_path / "one"), distribution="none"), tmp_path / "one.log"
    )
    (one,) = _finish([reference])
    assert reference.returncode == 0, one[-3000:]
    expected = _steps(one)
    assert sorted(expected) == list(range(1, STEPS + 1))

    # Two processes; process 1 is killed after the checkpoint of step 5, then
    # process 0 (waiting for it in the step's collectives).
    two = dict(config, workdir=str(tmp_path / "two"), distribution="data_parallel")
    pointer = tmp_path / "two" / "checkpoints" / "checkpoint.json"
    # Process 1 stalls after step 6, so process 0 checkpoints step 5 (at the
    # start of step 6) and then waits for process 1 in step 7.
    first = _jax_processes(two, tmp_path, "first", CCMIM_TEST_STALL="1",
                           STALL_AT=str(KILLED_AFTER + 1))
    try:
        deadline = time.time() + 180
        while time.time() < deadline and all(p.poll() is None for p in first):
            if pointer.exists() and json.loads(pointer.read_text())["global_step"] == KILLED_AFTER:
                break
            time.sleep(0.5)
        assert all(p.poll() is None for p in first), [open(p.log_path).read()[-3000:] for p in first]
        assert json.loads(pointer.read_text())["global_step"] == KILLED_AFTER
        os.kill(first[1].pid, signal.SIGKILL)
        first[1].wait()
        time.sleep(1.0)
    finally:
        for process in first:  # process 0 waits for process 1 in the collectives
            if process.poll() is None:
                process.kill()
            process.wait()
    logs = [open(p.log_path).read() for p in first]
    # Killed mid-run: neither finished (process 0 waited for process 1, or
    # failed when its collectives lost it).
    assert not any(line.startswith("DONE ") for log in logs for line in log.splitlines())
    before = _steps(logs[0])
    assert set(range(1, KILLED_AFTER + 1)) <= set(before)

    # Both rerun with the same command: they resume from process 0's checkpoint.
    second = _jax_processes(two, tmp_path, "second")
    logs = _finish(second)
    assert [p.returncode for p in second] == [0, 0], [log[-3000:] for log in logs]
    for log in logs:
        assert f"at step {KILLED_AFTER}" in log and "Resuming from the checkpoint" in log
    after = _steps(logs[0])
    assert sorted(after) == list(range(KILLED_AFTER + 1, STEPS + 1))
    assert f"DONE 0 {STEPS}" in logs[0] and f"DONE 1 {STEPS}" in logs[1]

    got = {step: before[step] for step in range(1, KILLED_AFTER + 1)}
    got.update(after)
    differences = {step: abs(got[step] - expected[step]) for step in expected}
    print("per-step |loss(2 processes) - loss(1 process)|:", differences)
    assert max(differences.values()) < 1e-4, (got, expected)
    # Only process 0 wrote the run's files.
    assert (tmp_path / "two" / "metrics.csv").exists()
    assert (tmp_path / "two" / "encoder" / "config.json").exists()


_TF_WORKER = r"""
import json, sys
from keras_ccmim.training import pretrain, setup_distribution

config = json.loads(sys.argv[1])
if config["distribution"] == "multi_worker":
    # TensorFlow configures its collectives once, before any other op.
    setup = setup_distribution("multi_worker")
    print("REPLICAS", setup.num_replicas, flush=True)
results = pretrain(config)
print("LOSS", repr(results.final_loss), flush=True)
"""


def _tf_worker(config, log_path, cluster, index):
    tf_config = {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-c", _TF_WORKER, json.dumps(config)],
        cwd=REPO_ROOT,
        env=subprocess_env(TF_CONFIG=json.dumps(tf_config)) if cluster else subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log_path
    return process


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute multi-worker")
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason=(
        "Keras 3.15.1 with TensorFlow 2.21: model.fit under MultiWorkerMirroredStrategy "
        "(2 workers on localhost, TF_CONFIG) fails in both workers with \"ValueError: "
        "Attempt to convert a value (PerReplica:{...}) with an unsupported type (<class "
        "'tensorflow.python.distribute.values.PerReplica'>) to a Tensor.\"; use the JAX "
        "backend for multi-host. Passing means a Keras release fixed it."
    ),
)
def test_two_tensorflow_workers_match_one(tiny_run, tmp_path):
    config = tiny_run(batch_size=16, epochs=1, steps_per_epoch=3, warmup_epochs=0.2,
                      tensorboard_every_steps=0)
    single = _tf_worker(dict(config, workdir=str(tmp_path / "one"), distribution="none"),
                        tmp_path / "one.log", None, 0)
    (one,) = _finish([single])
    assert single.returncode == 0, one[-3000:]
    cluster = [f"localhost:{_free_port()}" for _ in range(2)]
    workers = [
        _tf_worker(dict(config, workdir=str(tmp_path / f"worker{i}"), distribution="multi_worker"),
                   tmp_path / f"worker{i}.log", cluster, i)
        for i in range(2)
    ]
    logs = _finish(workers)
    errors = [line for log in logs for line in log.splitlines() if "Error" in line][-2:]
    assert [w.returncode for w in workers] == [0, 0], errors
    assert "REPLICAS 2" in logs[0]
    losses = [float(log.split("LOSS ", 1)[1].split()[0]) for log in [one] + logs]
    assert max(abs(loss - losses[0]) for loss in losses[1:]) < 1e-4, losses
