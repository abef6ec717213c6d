"""The installed wheel, as a user gets it: built from the checkout, installed
into a fresh virtual environment that sees the already-installed
dependencies but not the checkout, and run from an empty folder."""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import keras
import pytest

pytestmark = pytest.mark.slow  # minutes: see the `slow` marker in pyproject.toml

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tiny model of the other tests: seconds per step on any backend.
TINY = ["--config.image_size=16", "--config.patch_size=4", "--config.hidden_dim=32",
        "--config.num_layers=2", "--config.num_heads=2", "--config.decoder_hidden_dim=32",
        "--config.decoder_num_layers=1", "--config.decoder_num_heads=2",
        "--config.projection_dim=16", "--config.num_images=64", "--config.batch_size=16",
        "--config.epochs=1", "--config.steps_per_epoch=2", "--config.warmup_epochs=0.5",
        "--config.lift_images=16", "--config.verbose=0"]


def _env():
    """This test's backend, and no PYTHONPATH that could reach the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="3")
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`(python, bin)` of a venv holding only the wheel; the dependencies come
    from this interpreter's site-packages, added as a plain path (its `.pth`
    files, among them the checkout's editable install, are not run)."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the checkout's files (those git tracks or would):
    # setuptools' build/ folder in the checkout could carry earlier builds.
    source = root / "source"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    for name in files.stdout.splitlines():
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(root / "dist"), str(source)],
                   check=True, capture_output=True, env=_env())
    (wheel,) = glob.glob(str(root / "dist" / "*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, env=_env())
    python = root / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    wheel], check=True, capture_output=True, env=_env())
    # After the install, so that pip does not see the checkout's own install.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, env=_env()).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    assert (root / "venv" / "bin" / "ccmim-pretrain").exists()
    return python, root / "venv" / "bin", wheel


def test_the_wheel_holds_only_the_package_its_recipes_and_licence(installed):
    _, _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {
        "keras_ccmim", os.path.basename(wheel).split("-py3")[0] + ".dist-info"}
    for name in ("keras_ccmim/py.typed", "keras_ccmim/recipes/demo.py"):
        assert name in names
    assert any(name.endswith("licenses/LICENSE") for name in names)


def test_the_console_script_pretrains_the_demo_from_any_folder(installed, tmp_path):
    python, bin_dir, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [str(bin_dir / "ccmim-pretrain"), "--config=demo", "--workdir=run", *TINY],
        cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for name in ("masks.png", "results.json", "pretrainer.keras", "encoder/config.json"):
        assert (work / "run" / name).exists(), name
    assert "Final loss" in result.stdout
    # The package came from the wheel, not from the checkout.
    origin = subprocess.run([str(python), "-c", "import keras_ccmim; print(keras_ccmim.__file__)"],
                            cwd=work, env=_env(), capture_output=True, text=True, check=True)
    assert str(REPO_ROOT) not in origin.stdout and "venv" in origin.stdout


def test_no_top_level_package_but_ours(installed, tmp_path):
    python, _, _ = installed
    probe = ("import importlib.util as u\n"
             "for name in ('evaluate', 'benchmarks', 'train', 'tools'):\n"
             "    spec = u.find_spec(name)\n"
             "    print(name, spec.origin if spec else None)\n")
    result = subprocess.run([str(python), "-c", probe], cwd=tmp_path, env=_env(),
                            capture_output=True, text=True, check=True)
    venv = str(python.parents[1])
    for line in result.stdout.splitlines():
        name, origin = line.split(" ", 1)
        # Not installed by the wheel, not read from the checkout: another
        # project's `evaluate` (Hugging Face's) may be there, never ours.
        assert not origin.startswith(venv) and str(REPO_ROOT) not in origin, line
