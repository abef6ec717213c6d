"""Reading untrusted `.pth` files: MAE's layout with its args, and one line
for every file that is not a checkpoint this converter reads."""

import argparse
import fractions
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from keras_ccmim import CCMIMPretrainer
from keras_ccmim.conversion import convert_mae, torch_files
from tests.conversion.torch_reference import (
    DEC_HEADS,
    HEADS,
    PARITY_ATOL,
    images,
    mae_state_dict,
    max_diff,
    ref_encoder,
    to_torch,
)
from tests.testing_utils import to_numpy

pytestmark = pytest.mark.slow  # builds a converted model: see the `slow` marker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


def test_pth_round_trip_with_args_namespace(tmp_path):
    sd = mae_state_dict(seed=8, decoder=True)
    args = argparse.Namespace(model="mae_vit_custom", num_heads=HEADS, decoder_num_heads=DEC_HEADS,
                              mask_ratio=0.6, norm_pix_loss=False, input_size=32)
    path = tmp_path / "mae_visualize.pth"
    torch.save({"model": to_torch(sd), "args": args, "epoch": 3}, path)
    checkpoint = torch_files.load_mae_state_dict(path)
    assert checkpoint.args["model"] == "mae_vit_custom" and checkpoint.args["mask_ratio"] == 0.6
    assert sorted(checkpoint.state_dict) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(checkpoint.state_dict[key], value)
    model = convert_mae.convert_mae_checkpoint(path)
    assert isinstance(model, CCMIMPretrainer) and model.encoder.num_heads == HEADS
    assert model.mask_ratio == 0.6 and model.norm_pix_loss is False
    x = images(8)
    assert max_diff(to_numpy(model.encoder(x)), ref_encoder(sd, x)) < PARITY_ATOL


def test_pth_with_another_pickled_class_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": to_torch(mae_state_dict()), "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match=r"Refused to read .*argparse.Namespace.*fractions"):
        torch_files.load_mae_state_dict(path)


def test_reading_a_pth_without_torch_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch.*keras-ccmim\[torch\]"):
        torch_files.load_mae_state_dict(tmp_path / "x.pth")


# -- files that are not checkpoints: one line, never torch's advice ------------------------


def _not_checkpoints(tmp_path):
    """`{kind: path}`: an empty file, random bytes, random bytes behind a
    pickle's first byte (torch reads them as a pickle), and a real
    checkpoint and a real safetensors file cut in half."""
    rng = np.random.default_rng(0)
    files = {
        "empty": b"",
        "random bytes": bytes([7]) + rng.bytes(4096),
        "random pickle": b"\x80\x02" + rng.bytes(4096),
    }
    whole = tmp_path / "whole.pth"
    torch.save({"model": to_torch(mae_state_dict())}, whole)
    data = whole.read_bytes()
    files["truncated"] = data[: len(data) // 2]
    whole = tmp_path / "whole.safetensors"
    torch_files.save_state_dict(mae_state_dict(), whole, "safetensors")
    data = whole.read_bytes()
    files["truncated safetensors"] = data[: len(data) // 2]
    paths = {}
    for kind, content in files.items():
        paths[kind] = tmp_path / f"{kind.replace(' ', '_')}.pth"  # the name does not matter
        paths[kind].write_bytes(content)
    return paths


@pytest.mark.parametrize("kind, says", [
    ("empty", r"is empty \(0 bytes\), so it holds no checkpoint"),
    ("random bytes", r"is not a PyTorch checkpoint: it begins with neither"),
    ("random pickle", r"not a well-formed PyTorch checkpoint \(UnpicklingError: Unsupported"),
    ("truncated", r"not a well-formed PyTorch checkpoint \(RuntimeError: .*zip archive"),
    ("truncated safetensors", r"not a well-formed safetensors file"),
])
def test_a_file_that_is_not_a_checkpoint_gets_one_line(tmp_path, kind, says):
    path = _not_checkpoints(tmp_path)[kind]
    with pytest.raises(ValueError, match=says) as error:
        torch_files.load_mae_state_dict(path)
    text = str(error.value)
    assert "\n" not in text and str(path) in text
    # Damage is not a pickled class, and nothing suggests trusting the file.
    assert "weights_only" not in text and "arbitrary code" not in text, text


def test_binary_says_an_empty_pth_is_empty(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert_mae.py"), f"--checkpoint={path}",
         f"--output={tmp_path / 'out'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "is empty (0 bytes)" in errors[0], result.stderr
    assert not (tmp_path / "out").exists()
