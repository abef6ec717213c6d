"""Fixtures of the training tests: tiny run configs and a subprocess runner."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# A model small enough that a step takes milliseconds: 16 px, patch 4
# (16 patches), encoder 32 x 2, decoder 32 x 1. The fields whose library
# default is the paper's ImageNet recipe are given (the demo's values).
TINY_RUN = dict(
    preset="vit_tiny_patch4_32",
    image_size=16,
    patch_size=4,
    hidden_dim=32,
    num_layers=2,
    num_heads=2,
    decoder_hidden_dim=32,
    decoder_num_layers=1,
    decoder_num_heads=2,
    projection_dim=16,
    num_images=128,
    batch_size=16,
    epochs=2,
    steps_per_epoch=3,
    blr=1.5e-3,
    warmup_epochs=0.5,
    lift_images=16,
    verbose=0,
)


# PretrainConfig's defaults before they became the paper's recipe: what
# `train/pretrain.py` with no flags ran, the README's main job.
OLD_DEFAULTS = dict(
    preset="vit_tiny_patch4_32",
    image_size=None,
    patch_size=None,
    hidden_dim=None,
    num_layers=None,
    num_heads=None,
    decoder_hidden_dim=None,
    decoder_num_layers=None,
    decoder_num_heads=None,
    init_from=None,
    mask_ratio=0.75,
    masking="importance_sampling",
    sampler="gumbel",
    sampling_temperature=1.0,
    sampling_temperature_start=None,
    sampling_temperature_steps=None,
    score_layers="all",
    score_from="probabilities",
    score_scale="head_dim",
    scoring_drop_path=False,
    teacher_drop_path=False,
    teacher_updates_moving_statistics=True,
    contrastive="infonce",
    contrastive_weight=0.2,
    temperature=0.5,
    projection_dim=256,
    norm_pix_loss=True,
    dataset="synthetic_objects",
    data_dir=None,
    split="train",
    num_images=None,
    max_pixels=None,
    batch_size=64,
    accum_steps=1,
    epochs=2,
    steps_per_epoch=None,
    blr=0.0015,
    warmup_epochs=0.5,
    weight_decay=0.05,
    seed=0,
    mixed_precision="float32",
    jit_compile="auto",
    workdir=None,  # required now: the README's command passes --workdir=runs/demo
    distribution="auto",
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    fresh=False,
    resume_from_step=None,
    allow_config_change=False,
    checkpoint_every_steps=0,
    keep_checkpoints=2,
    tensorboard_every_steps=10,
    check_every_steps=20,
    lift_images=64,
    verbose="auto",
)


@pytest.fixture
def tiny_pretrainer():
    """`tiny_pretrainer(**kwargs)` -> an unbuilt `CCMIMPretrainer` of the
    tiny size."""
    from keras_ccmim.models import CCMIMPretrainer

    def make(**kwargs):
        encoder = {k: TINY_RUN[k] for k in ("image_size", "patch_size", "hidden_dim",
                                            "num_layers", "num_heads")}
        kwargs.setdefault("seed", 0)
        return CCMIMPretrainer.from_architecture(
            "vit_tiny_patch4_32",
            encoder_overrides=encoder,
            decoder_hidden_dim=TINY_RUN["decoder_hidden_dim"],
            decoder_num_layers=TINY_RUN["decoder_num_layers"],
            decoder_num_heads=TINY_RUN["decoder_num_heads"],
            projection_dim=TINY_RUN["projection_dim"],
            **kwargs,
        )

    return make


@pytest.fixture
def tiny_run(tmp_path):
    """`tiny_run(**overrides)` -> a dict of `PretrainConfig` fields for a tiny
    run in a fresh workdir under `tmp_path`."""

    def make(**overrides):
        values = dict(TINY_RUN, workdir=str(tmp_path / "run"))
        values.update(overrides)
        return values

    return make


def subprocess_env(**extra):
    env = dict(os.environ)
    env["KERAS_BACKEND"] = keras.backend.backend()
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.update(extra)
    return env


@pytest.fixture
def run_python():
    """`run_python(args, timeout=..., **env)` runs `python args...` from the
    repository root with this test's Keras backend and returns the
    `CompletedProcess` (text output)."""

    def run(args, timeout=240, **env):
        return subprocess.run(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=subprocess_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def start_python():
    """`start_python(args, **env)` starts `python args...` like `run_python`
    but returns the running `Popen` (output to files under the test's
    tmp folder is up to the caller); the process is killed at teardown."""
    started = []

    def start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **env):
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=subprocess_env(**env),
            stdout=stdout,
            stderr=stderr,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
