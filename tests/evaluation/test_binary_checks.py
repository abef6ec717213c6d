"""The evaluation binaries' checks: bad flags, contradicting flags, a split
the dataset lacks, and file-system trouble each end in one `Error:` line
(exit status 2), before any work and without a traceback; the export never
writes into a workdir, and no binary writes into a running pretraining's.

Each test runs one subprocess per binary that imports it once and calls its
`main` for every case (absl flags are parsed afresh per case), so the many
cases cost one start-up.
"""

import contextlib
import json
import math
import os
import subprocess
import sys

import pytest

from tests.evaluation.conftest import TINY_ENCODER, run_python

TINY_FLAGS = [f"--{k}={v}" for k, v in TINY_ENCODER.items()]

_DRIVER = r"""
import contextlib, importlib, io, json, os, sys, traceback
from absl import flags

program, cases, read_only = sys.argv[1:4]
if read_only:  # a location that os.access calls read-only (tests run as root)
    real_access = os.access
    os.access = lambda path, mode: (
        False if os.path.realpath(path) == read_only else real_access(path, mode))
binary = importlib.import_module(f"keras_ccmim.cli.{program}")
from keras_ccmim.cli import evaluation_flags as common


def raise_os_error(*args, **kwargs):
    raise PermissionError(13, "Permission denied", "/data/run/encoder.weights.h5")


float_flags = sorted(
    flag.name
    for module, defined in flags.FLAGS.flags_by_module_dict().items()
    if not module.startswith(("absl.", "tensorflow."))
    for flag in defined
    if flag.flag_type() == "float"
)
runs = []
for args in json.loads(cases):
    # "OS_ERROR_IN=name": the case's common.<name> raises a PermissionError.
    hooks = [arg.split("=", 1)[1] for arg in args if arg.startswith("OS_ERROR_IN=")]
    args = [arg for arg in args if not arg.startswith("OS_ERROR_IN=")]
    saved = {name: getattr(common, name) for name in hooks}
    for name in hooks:
        setattr(common, name, raise_os_error)
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["binary"] + args)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = binary.main(["binary"])
        except BaseException:
            code = "raised"
            err.write(traceback.format_exc())
    for name, value in saved.items():
        setattr(common, name, value)
    runs.append({"args": args, "code": code, "stderr": err.getvalue()})
print("RESULTS " + json.dumps({"float_flags": float_flags, "runs": runs}))
"""


def run_cases(binary, cases, read_only=""):
    """Runs the main of `keras_ccmim.cli.{binary}` (`evaluate/{binary}.py`)
    once per argument list in `cases` (an argument `OS_ERROR_IN=name` makes
    `keras_ccmim.cli.evaluation_flags.<name>` raise a `PermissionError` in
    that case; `read_only` is a folder `os.access` reports read-only).

    Returns:
        `(float_flags, runs)`: the binary's float flags, and per case a dict
        with `code` (main's return value) and `stderr`.
    """
    process = run_python(
        ["-c", _DRIVER, binary, json.dumps(cases),
         os.path.realpath(read_only) if read_only else ""],
        timeout=300,
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULTS ")]
    assert process.returncode == 0 and lines, process.stdout[-2000:] + process.stderr[-4000:]
    results = json.loads(lines[-1][len("RESULTS "):])
    return results["float_flags"], results["runs"]


def error_line(run):
    """The run's one `Error:` line (and nothing else on stderr)."""
    err = run["stderr"]
    assert run["code"] == 2, (run["args"], err[-3000:])
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), (run["args"], err[-3000:])
    return lines[0]


OS_ERROR = "OS_ERROR_IN=encoder_source"  # where every binary chooses its encoder
OS_ERROR_LINE = (
    "Error: Permission denied: '/data/run/encoder.weights.h5'. Fix: change its "
    "permissions or choose a location this user can write."
)


# Per binary: every float flag with a finite value outside its range.
OUT_OF_RANGE = {
    "knn": {"temperature": 0.0},
    "linear_probe": {"blr": 0.0, "momentum": 1.0, "weight_decay": -0.1, "warmup_epochs": -1.0},
    "finetune": {
        "warmup_epochs": -1.0,
        "blr": -1e-4,
        "weight_decay": -0.05,
        "layer_decay": 1.5,
        "drop_path": 1.0,
        "rand_augment": 11.0,
        "reprob": 1.5,
        "mixup": -0.8,
        "cutmix": -1.0,
        "smoothing": 1.0,
    },
    "export": {},
    "visualize": {},
}


@pytest.mark.parametrize("binary", sorted(OUT_OF_RANGE))
def test_every_float_flag_is_finite_and_in_range(binary, tmp_path):
    bad = OUT_OF_RANGE[binary]
    workdir = tmp_path / "never_read"  # every case fails before it is looked at
    cases, expected = [], []
    for name, value in bad.items():
        for wrong in (math.nan, math.inf, -math.inf, value):
            cases.append([f"--workdir={workdir}", f"--{name}={wrong}"])
            expected.append((name, repr(float(wrong))))
    float_flags, runs = run_cases(binary, cases)
    assert float_flags == sorted(bad), "a float flag without a range check"
    for run, (name, shown) in zip(runs, expected):
        line = error_line(run)
        assert line.startswith(f"Error: --{name} must be a finite number "), line
        assert line.endswith(f"got {shown}."), line


ARCHITECTURE_FLAGS = ["--preset=vit_base_patch16_224", "--image_size=32", "--patch_size=8",
                      "--hidden_dim=64", "--num_layers=4", "--num_heads=4"]


@pytest.mark.parametrize("binary", ["knn", "linear_probe", "finetune", "export", "visualize"])
def test_architecture_flags_contradict_a_workdir(binary, tmp_path):
    other = [f"--saved_model={tmp_path / 'saved_model'}"] if binary == "export" else []
    if binary == "visualize":
        other = [f"--output={tmp_path / 'recon.png'}"]
    flags = ARCHITECTURE_FLAGS + (["--masking=random"] if binary == "visualize" else [])
    sources = [f"--workdir={tmp_path}"]
    if binary in ("knn", "linear_probe"):
        (tmp_path / "saved_model").mkdir()
        (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"")
        sources.append(f"--saved_model={tmp_path / 'saved_model'}")
    cases = [[source, flag, *other] for source in sources for flag in flags]
    cases.append([sources[0], "--image_size=32", "--num_layers=4", *other])
    _, runs = run_cases(binary, cases)
    for run in runs:
        line = error_line(run)
        given = ", ".join(arg.split("=")[0] for arg in run["args"][1:] if arg not in other)
        source = run["args"][0].split("=")[0]
        verb = "set" if "," in given else "sets"
        assert line.startswith(f"Error: {given} {verb} the architecture of a --random_init "
                               f"encoder, but the encoder comes from {source}"), line
        assert f"Drop {given}, or use --random_init instead of {source}." in line


def test_a_saved_model_input_that_is_not_one(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    a_file = tmp_path / "model.pb"
    a_file.write_bytes(b"x")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "saved_model.pb").write_bytes(b"\x00 not a protocol buffer \xff" * 4)
    cases = {
        "does not exist": tmp_path / "missing",
        "is a file, not a SavedModel folder": a_file,
        "is not a SavedModel: it has no saved_model.pb": empty,
        "cannot be loaded": damaged,
    }
    _, runs = run_cases("knn", [[f"--saved_model={path}"] for path in cases.values()])
    for run, (message, path) in zip(runs, cases.items()):
        line = error_line(run)
        assert f"--saved_model '{path}' {message}" in line, line
        assert "evaluate/export.py" in line, line


def _workdir_with_encoder(folder):
    from keras_ccmim.evaluation import random_encoder

    random_encoder(seed=0, **TINY_ENCODER).save_to_preset(str(folder / "encoder"))
    return folder


def test_a_damaged_workdir_is_one_line(tmp_path):
    good = _workdir_with_encoder(tmp_path / "good")
    weights = (good / "encoder" / "model.weights.h5").read_bytes()
    config = (good / "encoder" / "config.json").read_text()
    damaged = {
        "garbage": ("encoder/model.weights.h5", b"not an HDF5 file"),
        "truncated": ("encoder/model.weights.h5", weights[: len(weights) // 2]),
        "folder": ("encoder/model.weights.h5", None),
        "config": ("encoder/config.json", config[: len(config) // 2].encode()),
    }
    cases, expected = [], []
    for name, (file_name, content) in damaged.items():
        workdir = tmp_path / name
        (workdir / "encoder").mkdir(parents=True)
        for other in ("encoder/model.weights.h5", "encoder/config.json"):
            if other != file_name:
                (workdir / other).write_bytes((good / other).read_bytes())
        if content is None:
            (workdir / file_name).mkdir()  # unreadable as a file, even for root
        else:
            (workdir / file_name).write_bytes(content)
        cases.append([f"--workdir={workdir}"])
        expected.append(f"Cannot read {workdir / file_name} (")
    a_file = tmp_path / "run.txt"
    a_file.write_text("mine")
    cases.append([f"--workdir={a_file}"])
    expected.append(f"workdir '{a_file}' is a file, not a folder")
    _, runs = run_cases("knn", cases + [["--random_init", OS_ERROR]])
    for run, message in zip(runs, expected):
        line = error_line(run)
        assert message in line, line
    for run in runs[: len(damaged)]:
        assert "rerun the pretraining command of this workdir" in error_line(run)
    assert error_line(runs[-1]) == OS_ERROR_LINE


def test_a_damaged_pretrainer_is_one_line(tmp_path):
    (tmp_path / "pretrainer.keras").write_bytes(b"not a zip archive")
    output = f"--output={tmp_path / 'recon.png'}"
    _, runs = run_cases("visualize", [[f"--workdir={tmp_path}", output],
                                      ["--random_init", output, OS_ERROR]])
    line = error_line(runs[0])
    assert f"Cannot read {tmp_path / 'pretrainer.keras'} (" in line, line
    assert error_line(runs[1]) == OS_ERROR_LINE


@pytest.mark.parametrize("binary", ["knn", "linear_probe", "finetune", "export", "visualize"])
def test_an_output_that_cannot_be_written(binary, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    extra = [f"--saved_model={tmp_path / 'saved_model'}"] if binary == "export" else []
    outputs = {
        f"--output '{tmp_path}' is a folder; pass a file path": tmp_path,
        f"cannot be created: '{a_file}' is a file, not a folder": a_file / "out.json",
        f"cannot be written: '{read_only}' is read-only": read_only / "out.json",
    }
    workdir = f"--workdir={tmp_path / 'never_read'}"  # fails fast should a check let it by
    cases = [[workdir, f"--output={path}", *extra] for path in outputs.values()]
    _, runs = run_cases(binary, cases, read_only=str(read_only))
    for run, message in zip(runs, outputs):
        assert message in error_line(run)
    assert a_file.read_text() == "mine" and os.listdir(read_only) == []


@pytest.mark.parametrize("binary", ["linear_probe", "finetune"])
def test_a_file_system_error_is_one_line(binary):
    """Any OSError reaching a binary's top level is one line with the path
    and the fix (knn, export and visualize: in the tests below)."""
    _, runs = run_cases(binary, [["--random_init", OS_ERROR]])
    assert error_line(runs[0]) == OS_ERROR_LINE


def _fake_workdir(folder):
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "ckpt-00000003.weights.h5").write_bytes(b"checkpoint")
    (folder / "config.json").write_text("{}")
    (folder / "metrics.csv").write_text("step,loss\n")
    return folder


def _snapshot(folder):
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


def test_export_never_writes_into_the_workdir(tmp_path):
    """The JAX fallback once emptied `--saved_model=W` with `--workdir=W`."""
    workdir = _fake_workdir(tmp_path / "run")
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("mine")
    a_file = tmp_path / "model.pb"
    a_file.write_text("mine")
    before = _snapshot(tmp_path)
    inside = [
        ("is the workdir", workdir),
        ("is inside the workdir", workdir / "checkpoints"),
        ("is inside the workdir", workdir / "saved_model"),
        ("contains the workdir", tmp_path),
    ]
    cases = [
        (message, [f"--workdir={workdir}", f"--saved_model={target}", *overwrite])
        for message, target in inside
        for overwrite in ([], ["--overwrite"])
    ]
    random_init = ["--random_init", *TINY_FLAGS]
    cases += [
        ("already holds files. Pass --overwrite", [*random_init, f"--saved_model={results}"]),
        ("holds files that are not a SavedModel's",
         [*random_init, f"--saved_model={results}", "--overwrite"]),
        ("is a file, not a folder", [*random_init, f"--saved_model={a_file}", "--overwrite"]),
    ]
    cases.append((OS_ERROR_LINE, [*random_init, f"--saved_model={tmp_path / 'new'}",
                                  OS_ERROR]))
    _, runs = run_cases("export", [args for _, args in cases])
    for run, (message, _) in zip(runs, cases):
        assert message in error_line(run)
    assert "Pass a folder outside it, e.g. --saved_model=" in error_line(runs[0])
    assert _snapshot(tmp_path) == before


# Holds the lock of a running pretraining on sys.argv[1] (run.lock) until
# its stdin closes, with its PID in the file when sys.argv[2] is "pid".
_HOLD_LOCK = r"""
import fcntl, os, sys
lock = open(sys.argv[1], "a+")
fcntl.flock(lock, fcntl.LOCK_EX)
lock.truncate(0)
if sys.argv[2] == "pid":
    lock.write(str(os.getpid()))
lock.flush()
print("locked", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def lock_held(workdir, write_pid=True):
    """Another process holds `workdir`'s run.lock within the block; yields
    its PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(workdir / "run.lock"),
         "pid" if write_pid else "none"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_workdir_in_use_names_the_process_holding_the_lock(tmp_path):
    from keras_ccmim.training.workdir import workdir_in_use

    workdir = tmp_path / "run"
    with lock_held(workdir) as pid:
        for path in (workdir, workdir / "finetune", workdir / "new" / "deeper" / "out.json"):
            assert workdir_in_use(path) == pid, path
        assert workdir_in_use(tmp_path) is None
        assert workdir_in_use(tmp_path / "run_2" / "out.json") is None
        (tmp_path / "link").symlink_to(workdir)
        assert workdir_in_use(tmp_path / "link" / "out.json") == pid
    # The run ended: its lock file stays behind, held by nobody.
    assert (workdir / "run.lock").exists() and workdir_in_use(workdir) is None
    with lock_held(workdir, write_pid=False):
        assert workdir_in_use(workdir / "out.json") == "unknown"


def test_nothing_is_written_into_a_running_workdir(tmp_path):
    workdir = tmp_path / "run"
    random_init = ["--random_init", *TINY_FLAGS]
    cases = {
        "finetune": [[*random_init, f"--output_dir={workdir / 'finetune'}"],
                     [*random_init, f"--output={workdir / 'finetune.json'}"]],
        "segment": [[*random_init, f"--output_dir={workdir}"]],
        "export": [[*random_init, f"--saved_model={workdir / 'saved_model'}"]],
    }
    with lock_held(workdir) as pid:
        before = _snapshot(tmp_path)
        for binary, arguments in cases.items():
            _, runs = run_cases(binary, arguments)
            for run in runs:
                flag, path = run["args"][-1].split("=", 1)
                assert error_line(run) == (
                    f"Error: {flag} {path!r} is inside the workdir of a running pretraining "
                    f"(PID {pid} holds its run.lock); the evaluation programs never write "
                    "into a running run's folder. Pass a path outside that workdir, or wait "
                    "for the run to end.")
        assert _snapshot(tmp_path) == before


def test_a_split_the_dataset_lacks_is_refused_before_the_encoder_is_read(tmp_path):
    """An image folder has only `train`; the split is checked before the
    encoder is read (the workdir does not exist)."""
    workdir = f"--workdir={tmp_path / 'never_read'}"
    folder = f"folder:{tmp_path}"
    _, runs = run_cases("knn", [
        [workdir, f"--dataset={folder}", "--eval_split=test"],
        [workdir, "--train_split=validation[:50%]"],
    ])
    assert error_line(runs[0]) == (
        f"Error: eval_split 'test': '{folder}' has no split 'test'; its splits are ['train']. "
        "Slice one of them for a held-out set, e.g. 'train[:80%]' and 'train[80%:]' (the "
        "default where there is no 'test' split).")
    assert error_line(runs[1]).startswith(
        "Error: train_split 'validation[:50%]': 'synthetic_objects' has no split "
        "'validation'; its splits are ['test', 'train'].")


def test_a_refused_rerun_names_the_flags_of_the_changed_fields():
    from keras_ccmim.cli.evaluation_flags import FLAG_OF_ARGUMENT, with_flag_names
    from keras_ccmim.evaluation.finetune_run import FinetuneConfigError

    text = ("output_dir 'run' holds a segmentation run with a different configuration: "
            "base_learning_rate: 0.05 -> 0.001, image_size: 16 -> 32, "
            "encoder.drop_path_rate: 0.0 -> 0.1. Rerun with the same settings to resume it.")
    named = with_flag_names(FinetuneConfigError(text),
                            dict(FLAG_OF_ARGUMENT, image_size="segment_image_size"))
    assert str(named) == text + (
        " (Flags: base_learning_rate is --blr, image_size is --segment_image_size, "
        "encoder_weights and encoder.* are the encoder's (--workdir, or --random_init with "
        "its --seed and sizes).)")
    other = ValueError("base_learning_rate: 1 -> 2")  # not a refused rerun: as it is
    assert with_flag_names(other) is other

