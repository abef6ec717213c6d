"""The MAE / ccMIM checkpoint converter against an independent torch forward.

The references here are written from MAE's definitions (timm names and
shapes, `get_2d_sincos_pos_embed`'s formula, pre-norm blocks with exact GELU
and LayerNorm eps 1e-6), in float64 torch, and compared with the converted
Keras model on the backend under test. torch builds the reference on every
backend.
"""

import argparse
import fractions
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keras_ccmim import CCMIMPretrainer, ViTEncoder
from keras_ccmim.conversion import convert_mae, mae_architecture, torch_files
from tests.testing_utils import to_numpy

pytestmark = pytest.mark.slow  # a minute or two of model builds: see the `slow` marker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

# The small ViT of the tests: 32 px, patch 8 (4x4 grid), width 64, 2 blocks,
# 4 heads, MLP 256; decoder 32 wide, 1 block, 4 heads.
IMAGE, PATCH, WIDTH, DEPTH, HEADS = 32, 8, 64, 2, 4
DEC_WIDTH, DEC_DEPTH, DEC_HEADS = 32, 1, 4
GRID = IMAGE // PATCH
NUM_PATCHES = GRID * GRID
PARITY_ATOL = 1e-5


# -- MAE's fixed position table, written from its formula -----------------------


def mae_sincos_1d(dim, positions):
    freqs = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = positions.reshape(-1)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def mae_sincos_2d(dim, grid_size, cls_token):
    # MAE meshes (w, h): the first half of the channels encodes the column.
    cols, rows = np.meshgrid(
        np.arange(grid_size, dtype=np.float64), np.arange(grid_size, dtype=np.float64)
    )
    table = np.concatenate(
        [mae_sincos_1d(dim // 2, cols), mae_sincos_1d(dim // 2, rows)], axis=1
    )
    if cls_token:
        table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return table


# -- a random MAE state dict -------------------------------------------------------


def _block(rng, prefix, d, hidden):
    def lin(out, inp):
        return rng.normal(0, inp**-0.5, (out, inp)), rng.normal(0, 0.1, (out,))

    sd = {}
    for norm in ("norm1", "norm2"):
        sd[f"{prefix}.{norm}.weight"] = 1 + rng.normal(0, 0.2, (d,))
        sd[f"{prefix}.{norm}.bias"] = rng.normal(0, 0.2, (d,))
    for name, (out, inp) in {
        "attn.qkv": (3 * d, d),
        "attn.proj": (d, d),
        "mlp.fc1": (hidden, d),
        "mlp.fc2": (d, hidden),
    }.items():
        sd[f"{prefix}.{name}.weight"], sd[f"{prefix}.{name}.bias"] = lin(out, inp)
    return sd


def mae_state_dict(seed=0, decoder=False, projector=False, width=WIDTH, depth=DEPTH,
                   projection_dim=16):
    rng = np.random.default_rng(seed)
    d = width
    sd = {
        "cls_token": rng.normal(0, 1.0, (1, 1, d)),
        "pos_embed": mae_sincos_2d(d, GRID, cls_token=True)[None],
        "patch_embed.proj.weight": rng.normal(0, (3 * PATCH * PATCH) ** -0.5, (d, 3, PATCH, PATCH)),
        "patch_embed.proj.bias": rng.normal(0, 0.1, (d,)),
        "norm.weight": 1 + rng.normal(0, 0.2, (d,)),
        "norm.bias": rng.normal(0, 0.2, (d,)),
    }
    for i in range(depth):
        sd.update(_block(rng, f"blocks.{i}", d, 4 * d))
    if decoder:
        dd, out = DEC_WIDTH, PATCH * PATCH * 3
        sd.update({
            "decoder_embed.weight": rng.normal(0, d**-0.5, (dd, d)),
            "decoder_embed.bias": rng.normal(0, 0.1, (dd,)),
            "mask_token": rng.normal(0, 1.0, (1, 1, dd)),
            "decoder_pos_embed": mae_sincos_2d(dd, GRID, cls_token=True)[None],
            "decoder_norm.weight": 1 + rng.normal(0, 0.2, (dd,)),
            "decoder_norm.bias": rng.normal(0, 0.2, (dd,)),
            "decoder_pred.weight": rng.normal(0, dd**-0.5, (out, dd)),
            "decoder_pred.bias": rng.normal(0, 0.1, (out,)),
        })
        for i in range(DEC_DEPTH):
            sd.update(_block(rng, f"decoder_blocks.{i}", dd, 4 * dd))
    if projector:
        e = projection_dim
        sd.update({
            "projector.0.weight": rng.normal(0, d**-0.5, (d, d)),
            "projector.1.weight": 1 + rng.normal(0, 0.2, (d,)),
            "projector.1.bias": rng.normal(0, 0.2, (d,)),
            "projector.1.running_mean": rng.normal(0, 0.5, (d,)),
            "projector.1.running_var": rng.uniform(0.5, 2.0, (d,)),
            "projector.1.num_batches_tracked": np.array(100, np.int64),
            "projector.3.weight": rng.normal(0, d**-0.5, (e, d)),
            "projector.4.running_mean": rng.normal(0, 0.5, (e,)),
            "projector.4.running_var": rng.uniform(0.5, 2.0, (e,)),
            "projector.4.num_batches_tracked": np.array(100, np.int64),
        })
    return {k: (v if v.dtype == np.int64 else v.astype(np.float32)) for k, v in sd.items()}


# -- the torch reference (float64) ---------------------------------------------------


def _t(sd):
    return {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in sd.items()
            if np.asarray(v).dtype != np.int64}


def ref_block(x, sd, prefix, heads):
    b, t, d = x.shape
    h = F.layer_norm(x, (d,), sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"], eps=1e-6)
    qkv = F.linear(h, sd[f"{prefix}.attn.qkv.weight"], sd[f"{prefix}.attn.qkv.bias"])
    q, k, v = qkv.reshape(b, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) * (d // heads) ** -0.5, dim=-1)
    mixed = (attn @ v).transpose(1, 2).reshape(b, t, d)
    x = x + F.linear(mixed, sd[f"{prefix}.attn.proj.weight"], sd[f"{prefix}.attn.proj.bias"])
    h = F.layer_norm(x, (d,), sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"], eps=1e-6)
    h = F.gelu(F.linear(h, sd[f"{prefix}.mlp.fc1.weight"], sd[f"{prefix}.mlp.fc1.bias"]))
    return x + F.linear(h, sd[f"{prefix}.mlp.fc2.weight"], sd[f"{prefix}.mlp.fc2.bias"])


def ref_encoder(sd_np, images_nhwc, heads=HEADS, depth=DEPTH):
    sd = _t(sd_np)
    x = torch.from_numpy(images_nhwc.astype(np.float64)).permute(0, 3, 1, 2)
    x = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"][:, 1:]
    cls = (sd["cls_token"] + sd["pos_embed"][:, :1]).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1)
    for i in range(depth):
        x = ref_block(x, sd, f"blocks.{i}", heads)
    d = x.shape[-1]
    return F.layer_norm(x, (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6).numpy()


def ref_decoder(sd_np, latent, ids_restore):
    sd = _t(sd_np)
    x = F.linear(torch.from_numpy(latent.astype(np.float64)), sd["decoder_embed.weight"],
                 sd["decoder_embed.bias"])
    b, n = ids_restore.shape
    masks = sd["mask_token"].expand(b, n + 1 - x.shape[1], -1)
    rest = torch.cat([x[:, 1:], masks], dim=1)
    index = torch.from_numpy(ids_restore.astype(np.int64))[..., None].expand(-1, -1, x.shape[2])
    x = torch.cat([x[:, :1], torch.gather(rest, 1, index)], dim=1) + sd["decoder_pos_embed"]
    for i in range(DEC_DEPTH):
        x = ref_block(x, sd, f"decoder_blocks.{i}", DEC_HEADS)
    x = F.layer_norm(x, (DEC_WIDTH,), sd["decoder_norm.weight"], sd["decoder_norm.bias"], eps=1e-6)
    return F.linear(x, sd["decoder_pred.weight"], sd["decoder_pred.bias"])[:, 1:].numpy()


def images(seed=0, batch=2):
    return np.random.default_rng(seed).normal(0, 1, (batch, IMAGE, IMAGE, 3)).astype(np.float32)


def max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


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


# -- .pth files --------------------------------------------------------------------------------


def _to_torch(sd):
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}


def test_pth_round_trip_with_args_namespace(tmp_path):
    sd = mae_state_dict(seed=8, decoder=True)
    args = argparse.Namespace(model="mae_vit_custom", num_heads=HEADS, decoder_num_heads=DEC_HEADS,
                              mask_ratio=0.6, norm_pix_loss=False, input_size=32)
    path = tmp_path / "mae_visualize.pth"
    torch.save({"model": _to_torch(sd), "args": args, "epoch": 3}, path)
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
    torch.save({"model": _to_torch(mae_state_dict()), "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ValueError, match=r"Refused to read .*argparse.Namespace.*fractions"):
        torch_files.load_mae_state_dict(path)


def test_reading_a_pth_without_torch_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"needs PyTorch.*keras-ccmim\[torch\]"):
        torch_files.load_mae_state_dict(tmp_path / "x.pth")


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
    torch.save({"model": _to_torch(mae_state_dict(seed=10))}, path)
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
