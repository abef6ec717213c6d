"""Reading untrusted `.pth` files: MAE's layout with its args, and one line
for every file that is not a checkpoint this converter reads."""

import argparse
import fractions
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
