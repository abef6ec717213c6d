"""The workdir's rules that need more than one process or a small disk: one
run at a time (`WorkdirLock`), and a full disk ending in one line with the
last good checkpoint kept."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from keras_ccmim.training import ConfigError, pretrain, resolve_config
from keras_ccmim.training.workdir import LOCK_FILE, WorkdirLock, workdir_in_use
from tests.training.conftest import REPO_ROOT, TINY_RUN, subprocess_env

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

BINARY = Path(__file__).resolve().parents[2] / "train" / "pretrain.py"

_HOLD = textwrap.dedent("""
    import sys, time
    from keras_ccmim.training.workdir import WorkdirLock
    with WorkdirLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def holder(tmp_path):
    """`holder(workdir)` starts a process that holds the workdir's lock and
    returns it once the lock is taken; it is killed at teardown."""
    started = []

    def start(workdir):
        process = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(workdir)], cwd=REPO_ROOT,
            env=subprocess_env(), stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "locked"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_second_run_is_refused_naming_the_pid_and_a_killed_holder_frees_it(
        tmp_path, holder):
    workdir = tmp_path / "run"
    first = holder(workdir)
    assert workdir_in_use(workdir) == first.pid
    assert workdir_in_use(workdir / "encoder" / "deeper") == first.pid
    values = dict(TINY_RUN, workdir=str(workdir), epochs=1)
    with pytest.raises(ConfigError, match=rf"workdir '{workdir}' is in use by another run "
                       rf"\(PID {first.pid}\)\. Wait for it to end, or pass another --workdir"):
        pretrain(values)
    assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # nothing written

    os.kill(first.pid, signal.SIGKILL)  # the OS releases the lock
    first.wait()
    assert workdir_in_use(workdir) is None
    results = pretrain(values)
    assert results.global_step == 3
    assert workdir_in_use(workdir) is None  # released at the end of the run


def test_the_binary_refuses_a_locked_workdir_in_one_line(tmp_path, holder, run_python):
    workdir = tmp_path / "run"
    first = holder(workdir)
    result = run_python([str(BINARY), f"--workdir={workdir}"], timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"(PID {first.pid})" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_lock_is_one_per_workdir_within_a_process_too(tmp_path):
    with WorkdirLock(tmp_path / "a"):
        with WorkdirLock(tmp_path / "b"):
            pass
        with pytest.raises(ConfigError, match="is in use by another run"):
            with WorkdirLock(tmp_path / "a"):
                pass


def test_a_batch_below_two_is_refused_with_a_contrastive_loss(tmp_path):
    values = dict(TINY_RUN, workdir=str(tmp_path / "run"), batch_size=1)
    with pytest.raises(ConfigError, match=r"batch_size 1 is too small for "
                       r"contrastive='infonce': InfoNCE needs other images"):
        resolve_config(values)
    resolve_config(dict(values, masking="random", contrastive="none"))  # MAE needs none


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MiB tmpfs (skipped where this process cannot mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount)],
                            capture_output=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_in_one_line_and_keeps_the_last_checkpoint(small_disk, run_python):
    import h5py

    from keras_ccmim.training.checkpoints import checkpoint_candidates

    workdir = small_disk / "run"
    values = dict(TINY_RUN, epochs=4, steps_per_epoch=4, checkpoint_every_steps=1,
                  keep_checkpoints=20)
    args = [f"--config.{k}={v}" for k, v in values.items()]
    result = run_python([str(BINARY), *args, f"--workdir={workdir}"], timeout=300)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "No space left on device" in errors[0] and "MiB free" in errors[0], errors[0]
    assert "Fix: free disk space or choose a location on another disk" in errors[0]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    # The newest checkpoint the folder names is whole, and no partial file is left.
    candidates = checkpoint_candidates(workdir / "checkpoints")
    assert candidates and not any(
        name.startswith(".partial") for name in os.listdir(workdir / "checkpoints"))
    with h5py.File(candidates[0][0]["weights"], "r") as f:  # a truncated file fails here
        arrays = []
        f.visititems(lambda name, item: arrays.append(item[()])
                     if isinstance(item, h5py.Dataset) else None)
    assert len(arrays) > 10
