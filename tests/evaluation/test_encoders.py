"""A `.keras` file whose model cannot be rebuilt (a function it names is not
defined here) is one line naming the file and the fix, from the library and
from the binary that reads it (`evaluate/visualize.py`), never a traceback."""

import keras
import pytest

from keras_ccmim.evaluation import load_pretrainer

from tests.evaluation.conftest import run_python

MISSING = "removed_here>doubled"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A workdir whose `pretrainer.keras` names an activation function this
    process (and a fresh one) does not define."""

    @keras.saving.register_keras_serializable(package="removed_here")
    def doubled(x):
        return 2 * x

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation=doubled)])
    model.save(tmp_path / "pretrainer.keras")
    monkeypatch.delitem(keras.saving.get_custom_objects(), MISSING)
    return tmp_path


def test_the_library_names_the_file_and_the_fix(workdir):
    with pytest.raises(ValueError) as error:
        load_pretrainer(workdir)
    message = str(error.value)
    assert message.startswith(f"Cannot rebuild the model in {workdir / 'pretrainer.keras'}: ")
    assert f"it names the function '{MISSING}'" in message
    assert "Rerun the pretraining command of this workdir" in message
    assert "\n" not in message and isinstance(error.value.__cause__, TypeError)


def test_the_binary_prints_one_error_line(workdir):
    run = run_python([
        "evaluate/visualize.py", f"--workdir={workdir}", f"--output={workdir / 'r.png'}",
    ])
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: Cannot rebuild the model in {workdir / 'pretrainer.keras'}")
    assert f"'{MISSING}'" in line
    assert not (workdir / "r.png").exists()
