"""The MAE / ccMIM checkpoint converter against an independent torch forward
(`tests/conversion/torch_reference.py`) on the backend under test."""

import argparse
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

from keras_ccmim import CCMIMPretrainer, ViTEncoder
from keras_ccmim.conversion import convert_mae, mae_architecture
from tests.conversion.torch_reference import (
    DEC_HEADS,
    HEADS,
    NUM_PATCHES,
    PARITY_ATOL,
    PATCH,
    WIDTH,
    images,
    mae_sincos_2d,
    mae_state_dict,
    max_diff,
    ref_decoder,
    ref_encoder,
    to_torch,
)
from tests.testing_utils import to_numpy

pytestmark = pytest.mark.slow  # a minute or two of model builds: see the `slow` marker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

# -- parity ------------------------------------------------------------------------


def test_encoder_matches_torch_mae_forward():
    sd = mae_state_dict(seed=1)
    encoder = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)
    assert isinstance(encoder, ViTEncoder)
    assert (encoder.image_size, encoder.patch_size, encoder.hidden_dim) == ((32, 32), 8, 64)
    assert (encoder.num_layers, encoder.num_heads, encoder.mlp_ratio) == (2, 4, 4.0)
    assert encoder.layer_norm_epsilon == 1e-6 and encoder.qkv_bias
    x = images(1)
    got = to_numpy(encoder(x))
    want = ref_encoder(sd, x)
    assert got.shape == want.shape == (2, 1 + NUM_PATCHES, WIDTH)
    cls_diff, patch_diff = max_diff(got[:, 0], want[:, 0]), max_diff(got[:, 1:], want[:, 1:])
    print(f"[{keras.backend.backend()}] encoder max |diff|: cls {cls_diff:.2e}, patches {patch_diff:.2e}")
    assert cls_diff < PARITY_ATOL and patch_diff < PARITY_ATOL
    # Not trivially close: the features vary across tokens and images.
    assert np.std(want[:, 1:]) > 0.5 and max_diff(want[0], want[1]) > 0.5


def test_nonzero_cls_position_is_folded_into_the_token():
    sd = mae_state_dict(seed=2)
    sd["pos_embed"][0, 0] = np.random.default_rng(5).normal(0, 1, WIDTH)
    encoder = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)
    np.testing.assert_allclose(
        to_numpy(encoder.cls_token), sd["cls_token"] + sd["pos_embed"][:, :1], atol=1e-7
    )
    x = images(2)
    assert max_diff(to_numpy(encoder(x)), ref_encoder(sd, x)) < PARITY_ATOL


def test_decoder_checkpoint_gives_a_pretrainer_matching_torch():
    sd = mae_state_dict(seed=3, decoder=True)
    model = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    assert isinstance(model, CCMIMPretrainer)
    assert (model.decoder_hidden_dim, model.decoder_num_layers, model.decoder_num_heads) == (32, 1, 4)
    # An MAE file: MAE's training configuration.
    assert model.masking == "random" and model.contrastive == "none" and model.projector is None
    x = images(3)
    enc_diff = max_diff(to_numpy(model.encoder(x)), ref_encoder(sd, x))

    rng = np.random.default_rng(4)
    visible = 5
    latent = rng.normal(0, 1, (2, 1 + visible, WIDTH)).astype(np.float32)
    ids_restore = np.stack([rng.permutation(NUM_PATCHES) for _ in range(2)]).astype(np.int32)
    got = to_numpy(model.decoder(latent, ids_restore))
    dec_diff = max_diff(got, ref_decoder(sd, latent, ids_restore))
    # All tokens visible (no mask token), identity order.
    full = rng.normal(0, 1, (2, 1 + NUM_PATCHES, WIDTH)).astype(np.float32)
    identity = np.tile(np.arange(NUM_PATCHES, dtype=np.int32), (2, 1))
    full_diff = max_diff(to_numpy(model.decoder(full, identity)), ref_decoder(sd, full, identity))
    print(f"[{keras.backend.backend()}] pretrainer max |diff|: encoder {enc_diff:.2e}, "
          f"decoder (masked) {dec_diff:.2e}, decoder (all tokens) {full_diff:.2e}")
    assert got.shape == (2, NUM_PATCHES, PATCH * PATCH * 3)
    assert enc_diff < PARITY_ATOL and dec_diff < PARITY_ATOL and full_diff < PARITY_ATOL
    np.testing.assert_array_equal(to_numpy(model.decoder.mask_token), sd["mask_token"])


def test_with_decoder_false_and_true():
    sd = mae_state_dict(seed=3, decoder=True)
    encoder = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, with_decoder=False)
    assert isinstance(encoder, ViTEncoder)
    with pytest.raises(ValueError, match="has no decoder"):
        convert_mae.convert_mae_state_dict(mae_state_dict(), num_heads=HEADS, with_decoder=True)
    with pytest.raises(ValueError, match="with_decoder must be"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, with_decoder="yes")


# -- the ccMIM projector -------------------------------------------------------------------


def _bn_eval(x, mean, var, gamma=None, beta=None, eps=1e-5):
    y = (x - mean) / np.sqrt(var + eps)
    return y if gamma is None else y * gamma + beta


def test_ccmim_projector_behind_module_prefix_is_mapped():
    sd = mae_state_dict(seed=6, decoder=True, projector=True)
    sd = {"module." + k: v for k, v in sd.items()}
    model = convert_mae.convert_mae_state_dict(
        sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS, pretrainer_kwargs={"seed": 3}
    )
    assert model.contrastive == "infonce" and model.masking == "importance_sampling"
    assert model.projection_dim == 16 and model.seed == 3
    fc1, bn1, _, fc2, bn2 = model.projector.mlp
    p = "module.projector."
    np.testing.assert_array_equal(to_numpy(fc1.kernel), sd[p + "0.weight"].T)
    np.testing.assert_array_equal(to_numpy(bn1.moving_variance), sd[p + "1.running_var"])
    np.testing.assert_array_equal(to_numpy(fc2.kernel), sd[p + "3.weight"].T)
    np.testing.assert_array_equal(to_numpy(bn2.moving_mean), sd[p + "4.running_mean"])
    # Inference forward against torch's eval-mode Sequential, written in numpy.
    cls = np.random.default_rng(7).normal(0, 1, (3, WIDTH)).astype(np.float32)
    h = cls.astype(np.float64) @ sd[p + "0.weight"].T.astype(np.float64)
    h = np.maximum(_bn_eval(h, sd[p + "1.running_mean"], sd[p + "1.running_var"],
                            sd[p + "1.weight"], sd[p + "1.bias"]), 0)
    want = _bn_eval(h @ sd[p + "3.weight"].T, sd[p + "4.running_mean"], sd[p + "4.running_var"])
    got = to_numpy(model.projector(cls, training=False))
    assert max_diff(got, want) < PARITY_ATOL
    x = images(6)
    unprefixed = {k[len("module."):]: v for k, v in sd.items()}
    assert max_diff(to_numpy(model.encoder(x)), ref_encoder(unprefixed, x)) < PARITY_ATOL


def test_projector_that_does_not_line_up_is_reported_not_converted():
    sd = mae_state_dict(seed=6, decoder=True, projector=True)
    sd["projector.0.bias"] = np.zeros(WIDTH, np.float32)  # the project's fc1 has no bias
    with pytest.warns(mae_architecture.UnconvertedWeightsWarning) as record:
        model = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    message = str(record[0].message)
    assert "projector.0.bias" in message and "projector.4.running_var" in message
    assert "lacks: 0.bias" in message
    assert model.projector is not None  # randomly initialised, training can go on
    with pytest.warns(mae_architecture.UnconvertedWeightsWarning, match="encoder only"):
        convert_mae.convert_mae_state_dict(
            mae_state_dict(decoder=True, projector=True), num_heads=HEADS, with_decoder=False
        )


# -- heads and sizes ---------------------------------------------------------------------------


def test_heads_come_from_argument_args_or_known_widths():
    sd = mae_state_dict()
    with pytest.raises(ValueError, match=r"width 64 is not a known preset width.*num_heads="):
        convert_mae.convert_mae_state_dict(sd)
    assert convert_mae.convert_mae_state_dict(sd, args={"num_heads": 8}).num_heads == 8
    assert convert_mae.convert_mae_state_dict(sd, args={"num_heads": 8}, num_heads=2).num_heads == 2
    with pytest.raises(ValueError, match="does not divide"):
        convert_mae.convert_mae_state_dict(sd, num_heads=6)
    small = mae_state_dict(width=384, depth=1)
    assert convert_mae.convert_mae_state_dict(small).num_heads == 6  # preset table
    named = argparse.Namespace(model="mae_vit_small_patch16", mask_ratio=0.75)
    assert convert_mae.convert_mae_state_dict(small, args=named).num_heads == 6
    # Another image size: the grid's table is recomputed for it.
    big = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, image_size=48)
    assert big.grid_size == (6, 6)
    np.testing.assert_allclose(
        to_numpy(big.position_embedding.embedding), mae_sincos_2d(WIDTH, 6, False), atol=1e-6
    )


# -- errors ----------------------------------------------------------------------------------------


def test_wrong_names_and_shapes_are_all_listed():
    sd = mae_state_dict()
    del sd["blocks.1.norm2.bias"]
    sd["blocks.0.attn.q_bias"] = np.zeros(WIDTH, np.float32)
    sd["blocks.1.mlp.fc2.weight"] = np.zeros((WIDTH, 128), np.float32)
    with pytest.raises(ValueError) as error:
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)
    text = str(error.value)
    assert "missing keys (1): blocks.1.norm2.bias" in text
    assert "unexpected keys (1): blocks.0.attn.q_bias" in text
    assert "blocks.1.mlp.fc2.weight: file [64, 128], expected [64, 256]" in text

    sd = mae_state_dict(decoder=True)
    sd["decoder_pred.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError, match=r"decoder_pred.bias: file \[7\], expected \[192\]"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS)

    sd = mae_state_dict()
    sd["teacher.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): teacher.weight"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)

    sd = mae_state_dict()
    sd["fc_norm.weight"], sd["fc_norm.bias"] = sd.pop("norm.weight"), sd.pop("norm.bias")
    with pytest.raises(ValueError, match="fine-tuned checkpoint with global pooling"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)

    with pytest.raises(ValueError, match="no 'cls_token'"):
        convert_mae.convert_mae_state_dict({"weight": np.zeros(3)}, num_heads=HEADS)


def test_position_table_that_differs_is_an_error():
    sd = mae_state_dict()
    half = WIDTH // 2
    pos = sd["pos_embed"].copy()
    sd["pos_embed"] = np.concatenate([pos[..., half:], pos[..., :half]], axis=-1)  # rows first
    with pytest.raises(ValueError, match=r"pos_embed \(patch rows\) differs from the fixed 2-D sin-cos"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS)
    sd = mae_state_dict(decoder=True)
    sd["decoder_pos_embed"] = sd["decoder_pos_embed"] + 1e-3
    with pytest.raises(ValueError, match="decoder_pos_embed differs"):
        convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    convert_mae.convert_mae_state_dict(
        sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS, position_embedding_atol=2e-3
    )


# -- saving ----------------------------------------------------------------------------


def test_save_converted_round_trip(tmp_path):
    sd = mae_state_dict(seed=9, decoder=True)
    model = convert_mae.convert_mae_state_dict(sd, num_heads=HEADS, decoder_num_heads=DEC_HEADS)
    paths = convert_mae.save_converted(model, tmp_path / "out")
    assert os.path.basename(paths["weights"]) == "model.weights.h5"
    with open(paths["config"]) as f:
        assert json.load(f)["class_name"] == "CCMIMPretrainer"
    loaded = convert_mae.load_converted(tmp_path / "out")
    x = images(9)
    np.testing.assert_allclose(to_numpy(loaded.encoder(x)), to_numpy(model.encoder(x)), atol=1e-6)
    np.testing.assert_array_equal(to_numpy(loaded.decoder.head.kernel), sd["decoder_pred.weight"].T)
    with pytest.raises(ValueError, match="already exist"):
        convert_mae.save_converted(model, tmp_path / "out")
    convert_mae.save_converted(model, tmp_path / "out", overwrite=True)


# (the whole file is slow; this test runs a subprocess importing Keras and torch)
def test_binary_converts_a_pth(tmp_path):
    path = tmp_path / "mae_pretrain.pth"
    torch.save({"model": to_torch(mae_state_dict(seed=10))}, path)
    out = tmp_path / "converted"
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.join(REPO, "tools", "convert_mae.py"),
               f"--checkpoint={path}", f"--output={out}"]
    result = subprocess.run(command + [f"--num_heads={HEADS}"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    encoder = convert_mae.load_converted(out)
    assert isinstance(encoder, ViTEncoder) and encoder.num_heads == HEADS
    x = images(10)
    assert max_diff(to_numpy(encoder(x)), ref_encoder(mae_state_dict(seed=10), x)) < PARITY_ATOL
