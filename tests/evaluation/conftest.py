"""Fixtures of the evaluation tests: tiny encoders, one pretraining run, a
subprocess runner for the binaries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# A tiny encoder: 16 px, patch 4 (16 patches), 32 wide, 2 blocks.
TINY_ENCODER = dict(image_size=16, patch_size=4, hidden_dim=32, num_layers=2, num_heads=2)

# The pretraining run the key check (and the binaries) use: ccMIM on
# synthetic_objects at 32 px with 8 px patches, 1000 steps (kept in
# benchmarks/key_pretraining.py, which the dense-transfer study shares). It
# runs once per session under the TensorFlow backend (a subprocess), so every
# backend evaluates the same encoder (eager torch would take minutes).
from benchmarks.key_pretraining import PRETRAIN_ENCODER, PRETRAIN_RUN  # noqa: E402


def subprocess_env(backend=None, **extra):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend or keras.backend.backend()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.update(extra)
    return env


def run_python(args, timeout=240, backend=None):
    """Runs `python args...` from the repository root; returns the
    `CompletedProcess` (text output)."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_encoder():
    from keras_ccmim.evaluation import random_encoder

    return random_encoder(seed=0, **TINY_ENCODER)


def _pretrain_cache_key(config):
    """Changes with the run's config, every library source file and the
    installed Keras and TensorFlow, so a cached run is never stale."""
    import hashlib

    import tensorflow as tf

    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    digest.update(f"{keras.__version__} {tf.__version__}".encode())
    for path in sorted((REPO_ROOT / "keras_ccmim").rglob("*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def _pretrain_cache_dir():
    """Where finished test pretrainings are kept between pytest sessions (the
    suite runs once per backend, each evaluating the same TensorFlow run):
    $KERAS_CCMIM_TEST_CACHE, else the system temp folder."""
    import tempfile

    return Path(os.environ.get("KERAS_CCMIM_TEST_CACHE")
                or Path(tempfile.gettempdir()) / "keras_ccmim_test_cache")


@pytest.fixture(scope="session")
def pretrained_workdir(tmp_path_factory):
    """A finished pretraining workdir (`PRETRAIN_RUN`, TensorFlow backend),
    a private copy for this session.

    The run takes minutes, so it is cached under `_pretrain_cache_dir()`
    keyed by `_pretrain_cache_key` (a lock makes concurrent sessions wait
    for one run instead of each training its own); a session that cannot
    write there trains in its own temp folder."""
    import fcntl
    import shutil

    workdir = tmp_path_factory.mktemp("pretrain") / "run"
    code = (
        "import json, sys; from keras_ccmim import training; "
        "training.pretrain(json.loads(sys.argv[1]))"
    )

    def train(target):
        config = dict(PRETRAIN_RUN, workdir=str(target))
        process = run_python(["-c", code, json.dumps(config)], timeout=900, backend="tensorflow")
        assert process.returncode == 0, process.stderr[-4000:]

    key = _pretrain_cache_key(PRETRAIN_RUN)
    cache = _pretrain_cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / f"{key}.lock", "w")
    except OSError:
        train(workdir)
        return str(workdir)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = cache / key
        if not (cached / "results.json").exists():
            partial = cache / f"{key}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # a killed session's own leftovers
            train(partial)
            partial.rename(cached)
    shutil.copytree(cached, workdir)
    return str(workdir)
