"""SavedModel export: plain `tf.saved_model.load` matches the in-memory encoder."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ccmim.data import make_dataset, normalize
from keras_ccmim.evaluation import (
    EncoderFeatures,
    export_saved_model,
    extract_features,
    extract_saved_model_features,
)
from keras_ccmim.evaluation import export as export_module
from keras_ccmim.evaluation.export_target import remove_leftovers
from tests.testing_utils import to_numpy


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from keras_ccmim.evaluation import random_encoder
    from tests.evaluation.conftest import TINY_ENCODER

    encoder = random_encoder(seed=3, **TINY_ENCODER)
    # Written over an existing SavedModel, beside a file of the user's (see
    # test_overwrite_replaces_a_saved_model_for_real).
    folder = tmp_path_factory.mktemp("export")
    _fake_saved_model(folder / "saved_model")
    (folder / "notes.txt").write_text("mine")
    path = export_saved_model(encoder, str(folder / "saved_model"), overwrite=True)
    return encoder, path


def test_float_and_uint8_endpoints_match_the_encoder(exported):
    encoder, path = exported
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 16, 16, 3)).astype("uint8")
    tokens = to_numpy(encoder(normalize(pixels).numpy()))
    want = {"cls": tokens[:, 0], "mean_patch": tokens[:, 1:].mean(1), "patch_tokens": tokens[:, 1:]}

    from_float = loaded.serve(tf.constant(pixels.astype("float32") / 255.0))
    from_uint8 = loaded.signatures["serve_uint8"](images=tf.constant(pixels))
    default = loaded.signatures["serving_default"](images=tf.constant(pixels / 255.0, tf.float32))
    for outputs in (from_float, from_uint8, default):
        assert set(outputs) == set(want)
        for name, value in want.items():
            np.testing.assert_allclose(outputs[name].numpy(), value, atol=1e-5, rtol=0)
    assert from_float["patch_tokens"].shape == (5, 16, 32)


def test_batch_size_is_free_and_image_size_fixed(exported):
    _, path = exported
    loaded = tf.saved_model.load(path)
    assert loaded.serve(tf.zeros((1, 16, 16, 3)))["cls"].shape == (1, 32)
    assert loaded.serve(tf.zeros((7, 16, 16, 3)))["cls"].shape == (7, 32)
    with pytest.raises((ValueError, TypeError)):
        loaded.serve(tf.zeros((1, 32, 32, 3)))
    # The signatures check only the dtype; the graph checks the size. 32 px
    # once gave 4 rows of features (the pixels of one image read as four).
    for name, dtype in (("serve", tf.float32), ("serve_uint8", tf.uint8),
                        ("serving_default", tf.float32)):
        signature = loaded.signatures[name]
        assert signature(images=tf.zeros((2, 16, 16, 3), dtype))["cls"].shape == (2, 32)
        for size in ((32, 32), (24, 24), (16, 32)):
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"takes images \[B, 16, 16, 3\]"):
                signature(images=tf.zeros((1, *size, 3), dtype))


_PLAIN_TF_CLIENT = """
import sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
for size in (16, 32, 64):
    try:
        rows = model.signatures["serving_default"](images=tf.zeros((1, size, size, 3)))
        print(size, "rows", rows["cls"].shape[0])
    except tf.errors.InvalidArgumentError as error:
        print(size, "refused:", " ".join(error.message.split()))
print("keras_ccmim imported:", any(m.startswith("keras_ccmim") for m in sys.modules))
"""


def test_a_plain_tensorflow_client_is_refused_at_another_size(exported):
    """What a user without this package runs: tf.saved_model.load and a
    serving signature. The export was written by this backend's method."""
    from tests.evaluation.conftest import run_python

    _, path = exported
    result = run_python(["-c", _PLAIN_TF_CLIENT, path])
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "16 rows 1"
    for line, size in zip(lines[1:3], (32, 64)):
        assert line.startswith(f"{size} refused:"), line
        assert "This encoder takes images [B, 16, 16, 3]" in line, line
        assert f"[{size} {size}] [y (Const:0) = ] [16 16]" in line, line  # both sizes
    assert lines[3] == "keras_ccmim imported: False"


def test_saved_model_features_match_encoder_features(exported):
    encoder, path = exported
    dataset = make_dataset(
        "synthetic_objects", split="test", batch_size=8, image_size=16, training=False,
        num_images=16,
    )
    want, want_labels = extract_features(encoder, dataset, "cls")
    got, labels = extract_saved_model_features(path, dataset, "cls")
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_unit_features_model_is_what_is_exported(exported):
    encoder, path = exported
    images = np.random.default_rng(2).uniform(size=(2, 16, 16, 3)).astype("float32")
    want = to_numpy(EncoderFeatures(encoder, input_format="unit")(images)["mean_patch"])
    loaded = tf.saved_model.load(path)  # keep it: its variables die with it
    got = loaded.serve(tf.constant(images))["mean_patch"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_bad_arguments(exported, tmp_path):
    encoder, _ = exported
    with pytest.raises(TypeError, match="ViTEncoder"):
        export_saved_model("encoder", str(tmp_path / "x"))
    with pytest.raises(ValueError, match="Unknown method 'onnx'"):
        export_saved_model(encoder, str(tmp_path / "x"), method="onnx")
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="tensorflow_subprocess"):
            export_saved_model(encoder, str(tmp_path / "x"), method="archive")


# --- The target: never delete what the export did not write. -------------

def _fake_saved_model(folder, marker=b"old"):
    """The files TensorFlow writes for a SavedModel (contents fake)."""
    (folder / "variables").mkdir(parents=True)
    (folder / "assets").mkdir()
    (folder / "saved_model.pb").write_bytes(marker)
    (folder / "fingerprint.pb").write_bytes(marker)
    (folder / "variables" / "variables.index").write_bytes(marker)
    (folder / "variables" / "variables.data-00000-of-00001").write_bytes(marker)
    return folder


def _snapshot(folder):
    """Every file under `folder` (relative path -> bytes) and every folder."""
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture
def fake_writer(monkeypatch):
    """Replaces the (slow) SavedModel writer by one that writes fake files
    where it is told; records the paths it was given."""
    written = []

    def write(encoder, path, method, verbose, timeout):
        from pathlib import Path

        written.append(path)
        _fake_saved_model(Path(path), marker=b"new")

    monkeypatch.setattr(export_module, "_write", write)
    return written


@pytest.fixture
def no_writer(monkeypatch):
    def write(*args):
        raise AssertionError("a refused target must be refused before anything is written")

    monkeypatch.setattr(export_module, "_write", write)


@pytest.fixture
def workdir(tmp_path):
    """A pretraining workdir's kind of content."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-00000003.weights.h5").write_bytes(b"checkpoint")
    (run / "config.json").write_text("{}")
    (run / "encoder.weights.h5").write_bytes(b"weights")
    return run


def test_a_new_or_empty_target_is_written(tiny_encoder, tmp_path, fake_writer):
    export_saved_model(tiny_encoder, str(tmp_path / "new" / "saved_model"))
    assert (tmp_path / "new" / "saved_model" / "saved_model.pb").read_bytes() == b"new"
    (tmp_path / "empty").mkdir()
    export_saved_model(tiny_encoder, str(tmp_path / "empty"))
    assert (tmp_path / "empty" / "saved_model.pb").read_bytes() == b"new"
    # Each was written in a folder beside its target, then renamed; that
    # folder is gone.
    staging = [os.path.dirname(path) for path in fake_writer]
    assert [os.path.dirname(folder) for folder in staging] == [
        os.path.realpath(tmp_path / "new"), os.path.realpath(tmp_path)
    ]
    assert not any(os.path.exists(folder) for folder in staging)
    assert sorted(os.listdir(tmp_path / "new")) == ["saved_model"]
    assert sorted(os.listdir(tmp_path)) == ["empty", "new"]


def test_an_existing_saved_model_needs_overwrite(tiny_encoder, tmp_path, fake_writer):
    target = _fake_saved_model(tmp_path / "saved_model")
    before = _snapshot(target)
    with pytest.raises(ValueError, match="already holds a SavedModel. Pass --overwrite"):
        export_saved_model(tiny_encoder, str(target))
    assert _snapshot(target) == before and not fake_writer
    export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert (target / "saved_model.pb").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_with_other_files_is_never_replaced(tiny_encoder, tmp_path, no_writer,
                                                     overwrite):
    target = tmp_path / "results"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    message = "holds files that are not a SavedModel's" if overwrite else "already holds files"
    with pytest.raises(ValueError, match=message):
        export_saved_model(tiny_encoder, str(target), overwrite=overwrite)
    assert _snapshot(target) == {"notes.txt": b"mine"}


@pytest.mark.parametrize(
    "extra", ["notes.txt", "variables/notes.txt", "checkpoints/ckpt.weights.h5"]
)
def test_overwrite_spares_a_saved_model_with_other_files(tiny_encoder, tmp_path, no_writer,
                                                         extra):
    target = _fake_saved_model(tmp_path / "saved_model")
    (target / extra).parent.mkdir(exist_ok=True)
    (target / extra).write_bytes(b"mine")
    before = _snapshot(target)
    with pytest.raises(ValueError, match="replaces only a folder holding a SavedModel"):
        export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert _snapshot(target) == before


def test_a_file_target_is_never_replaced(tiny_encoder, tmp_path, no_writer):
    target = tmp_path / "model.pb"
    target.write_bytes(b"mine")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        export_saved_model(tiny_encoder, str(target), overwrite=True)
    with pytest.raises(ValueError, match="cannot be created: .*model.pb' is a file"):
        export_saved_model(tiny_encoder, str(target / "saved_model"))
    assert target.read_bytes() == b"mine"


def test_a_read_only_location_is_refused(tiny_encoder, tmp_path, no_writer, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode)
    )
    with pytest.raises(ValueError, match="cannot be written: .* is read-only"):
        export_saved_model(tiny_encoder, str(tmp_path / "saved_model"))


@pytest.mark.parametrize(
    "where, relation",
    [(".", "is"), ("checkpoints", "is inside"), ("saved_model", "is inside"),
     ("..", "contains")],
)
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_workdir_and_its_checkpoints_are_never_a_target(
    tiny_encoder, workdir, no_writer, where, relation, overwrite
):
    before = _snapshot(workdir.parent)
    target = os.path.normpath(str(workdir / where))
    with pytest.raises(ValueError, match=f"{relation} the workdir .*Pass a folder outside it"):
        export_saved_model(tiny_encoder, target, overwrite=overwrite, protected=[str(workdir)])
    assert _snapshot(workdir.parent) == before


def test_a_link_to_the_workdir_is_never_a_target(tiny_encoder, workdir, no_writer):
    link = workdir.parent / "link"
    link.symlink_to(workdir, target_is_directory=True)
    with pytest.raises(ValueError, match="is the workdir"):
        export_saved_model(tiny_encoder, str(link), overwrite=True, protected=[str(workdir)])


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_an_interrupted_export_leaves_the_old_saved_model(
    tiny_encoder, tmp_path, monkeypatch, interruption
):
    target = _fake_saved_model(tmp_path / "saved_model")
    before = _snapshot(target)

    def write_half_then_stop(encoder, path, method, verbose, timeout):
        assert os.path.realpath(path) != os.path.realpath(target)
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "wb") as f:
            f.write(b"half")
        # Killed here, the old SavedModel is still whole.
        assert _snapshot(target) == before
        raise interruption("stopped")

    monkeypatch.setattr(export_module, "_write", write_half_then_stop)
    with pytest.raises(interruption):
        export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert _snapshot(target) == before
    assert os.listdir(tmp_path) == ["saved_model"]  # the staging folder is gone


def test_a_failed_rename_puts_the_old_saved_model_back(tiny_encoder, tmp_path, fake_writer,
                                                       monkeypatch):
    target = _fake_saved_model(tmp_path / "saved_model")
    before = _snapshot(target)
    real_rename = os.rename

    def rename(src, dst):
        if os.path.realpath(dst) == os.path.realpath(target) and "replaced" not in src:
            raise OSError(28, "No space left on device", dst)
        real_rename(src, dst)

    monkeypatch.setattr(export_module.os, "rename", rename)
    with pytest.raises(OSError, match="No space left"):
        export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert _snapshot(target) == before
    assert os.listdir(tmp_path) == ["saved_model"]


def test_auto_writes_a_plain_graph_on_every_backend(tiny_encoder, tmp_path, monkeypatch):
    """`method="auto"` exports in process on TensorFlow only: on JAX the
    archive would be jax2tf's XlaCallModule, which refuses another size with
    XLA's shape error instead of the one-line message."""
    from pathlib import Path

    written = []

    def archive(encoder, path, verbose):
        written.append("archive")
        _fake_saved_model(Path(path))

    def subprocess_export(encoder, path, timeout):
        written.append("subprocess")
        _fake_saved_model(Path(path))

    monkeypatch.setattr(export_module, "_export_in_process", archive)
    monkeypatch.setattr(export_module, "_export_in_subprocess", subprocess_export)
    export_saved_model(tiny_encoder, str(tmp_path / "saved_model"))
    want = "archive" if keras.backend.backend() == "tensorflow" else "subprocess"
    assert written == [want]


def test_overwrite_replaces_a_saved_model_for_real(exported):
    """The `exported` fixture used the real writer of this backend over an
    existing SavedModel with a file of the
    user's beside it."""
    _, path = exported
    folder = os.path.dirname(path)
    assert open(os.path.join(path, "saved_model.pb"), "rb").read() != b"old"
    loaded = tf.saved_model.load(path)  # keep it: its variables die with it
    assert loaded.serve(tf.zeros((1, 16, 16, 3)))["cls"].shape == (1, 32)
    assert sorted(os.listdir(folder)) == ["notes.txt", "saved_model"]
    assert open(os.path.join(folder, "notes.txt")).read() == "mine"


# --- What a killed export left behind: removed by the next one. -----------

_KILLED_EXPORT = """
import os, sys, time
from keras_ccmim.evaluation.export_target import STAGED, staging_folder

# What export_saved_model does, up to the middle of writing the SavedModel.
with staging_folder(os.path.realpath(sys.argv[1])) as staging:
    os.makedirs(os.path.join(staging, STAGED, "variables"))
    with open(os.path.join(staging, STAGED, "saved_model.pb"), "wb") as f:
        f.write(b"half")
    print("writing", flush=True)
    time.sleep(600)
"""


def _staging_folders(parent):
    return sorted(name for name in os.listdir(parent) if ".export-" in name)


def test_the_next_export_removes_what_a_killed_one_left(tiny_encoder, tmp_path, fake_writer):
    import signal
    import subprocess
    import sys

    from tests.evaluation.conftest import REPO_ROOT, subprocess_env

    target = _fake_saved_model(tmp_path / "saved_model")
    (tmp_path / "notes.txt").write_text("mine")
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(target)], cwd=REPO_ROOT,
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "writing"
        # While it runs, its folder is locked: another export leaves it alone.
        running = _staging_folders(tmp_path)
        assert len(running) == 1
        remove_leftovers(os.path.realpath(target))
        assert _staging_folders(tmp_path) == running
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert _staging_folders(tmp_path) == running  # left behind by the kill
    assert (target / "saved_model.pb").read_bytes() == b"old"

    export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "saved_model"]
    assert (target / "saved_model.pb").read_bytes() == b"new"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _leftover(parent, target_name, entries, suffix="abc123_x", lock=True):
    """A folder as a killed export to `target_name` leaves it (unlocked)."""
    folder = parent / f".{target_name}.export-{suffix}"
    folder.mkdir()
    if lock:
        (folder / "export.lock").write_text("")
    for name in entries:
        _fake_saved_model(folder / name, marker=name.encode())
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_saved_model_moved_aside_by_a_killed_export_is_put_back(
    tiny_encoder, tmp_path, fake_writer, overwrite
):
    """Killed between its two renames: the old SavedModel is in `replaced/`
    and the target is gone. The next export puts it back first, so without
    overwrite it is refused as before the killed export."""
    folder = _leftover(tmp_path, "saved_model", ["replaced", "saved_model"])
    target = tmp_path / "saved_model"
    if overwrite:
        export_saved_model(tiny_encoder, str(target), overwrite=True)
        assert (target / "saved_model.pb").read_bytes() == b"new"
    else:
        with pytest.raises(ValueError, match="already holds a SavedModel"):
            export_saved_model(tiny_encoder, str(target))
        assert (target / "saved_model.pb").read_bytes() == b"replaced"
    assert not folder.exists() and os.listdir(tmp_path) == ["saved_model"]


def test_a_superseded_saved_model_of_a_killed_export_is_removed(tiny_encoder, tmp_path,
                                                                fake_writer):
    """Killed after its rename, before deleting its folder: `replaced/` is
    the SavedModel it replaced."""
    target = _fake_saved_model(tmp_path / "saved_model", marker=b"renamed")
    folder = _leftover(tmp_path, "saved_model", ["replaced"])
    with pytest.raises(ValueError, match="already holds a SavedModel"):
        export_saved_model(tiny_encoder, str(target))  # refused: nothing is touched
    assert folder.exists() and (target / "saved_model.pb").read_bytes() == b"renamed"
    export_saved_model(tiny_encoder, str(target), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["saved_model"]
    assert (target / "saved_model.pb").read_bytes() == b"new"


def test_folders_an_export_did_not_leave_are_left_alone(tiny_encoder, tmp_path, fake_writer):
    import fcntl

    keep = [
        _leftover(tmp_path, "saved_model", ["saved_model"], suffix="short"),  # not mkdtemp's
        _leftover(tmp_path, "saved_model", ["saved_model"], suffix="NOT_OURS"),
        _leftover(tmp_path, "saved_model", ["saved_model"], suffix="nolock00", lock=False),
        _leftover(tmp_path, "other", ["saved_model"]),  # another target's
        _leftover(tmp_path, "saved_model", ["saved_model"], suffix="running0"),
        _leftover(tmp_path, "saved_model", ["replaced", "saved_model"], suffix="target00"),
    ]
    user = _leftover(tmp_path, "saved_model", [], suffix="withnote")
    (user / "notes.txt").write_text("mine")
    keep.append(user)
    link = tmp_path / ".saved_model.export-linked00"
    link.symlink_to(keep[1], target_is_directory=True)
    running = open(keep[4] / "export.lock")  # a live export holds its lock
    fcntl.flock(running, fcntl.LOCK_EX)
    target = _fake_saved_model(tmp_path / "saved_model")  # exists: keep[5] stays aside
    before = _snapshot(tmp_path)
    try:
        export_saved_model(tiny_encoder, str(target), overwrite=True)
    finally:
        running.close()
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("saved_model")} == {
        k: v for k, v in before.items() if not k.startswith("saved_model")
    }
    assert (target / "saved_model.pb").read_bytes() == b"new"
