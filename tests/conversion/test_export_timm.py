"""Export to timm's `vit_*` / MAE's naming: back through the MAE converter to
the same encoder, the independent torch forward of `torch_reference.py` on
the exported file, and one-line refusals."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import torch

from keras_ccmim import ViTEncoder
from keras_ccmim.conversion import convert_mae, export_timm, torch_files
from keras_ccmim.input_contract import IMAGENET_MEAN, IMAGENET_STD
from keras_ccmim.models.preset_files import save_to_preset
from tests.conversion.torch_reference import (
    DEPTH,
    HEADS,
    IMAGE,
    PARITY_ATOL,
    PATCH,
    WIDTH,
    max_diff,
    ref_encoder,
)
from tests.testing_utils import to_numpy

pytestmark = pytest.mark.slow  # model builds and a subprocess: see the `slow` marker

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
ROUND_TRIP_ATOL = 1e-6

# The default small ViT, and one with what the default leaves out: no qkv
# bias, MLP ratio 3, a non-square 4x6 grid.
DEFAULT = {}
VARIANT = {"qkv_bias": False, "mlp_ratio": 3.0, "image_size": (IMAGE, IMAGE + 2 * PATCH)}


def random_encoder(seed=0, **overrides):
    """A built small ViTEncoder whose every weight (but the fixed position
    table) is random, LayerNorm scales and biases included."""
    config = dict(image_size=IMAGE, patch_size=PATCH, hidden_dim=WIDTH, num_layers=DEPTH,
                  num_heads=HEADS)
    encoder = ViTEncoder(**dict(config, **overrides))
    encoder.build()
    rng = np.random.default_rng(seed)
    for variable in encoder.weights:
        if variable is encoder.position_embedding.embedding:
            continue
        shape = tuple(variable.shape)
        if len(shape) == 2:
            value = rng.normal(0, shape[0] ** -0.5, shape)
        elif variable.path.endswith("gamma"):
            value = 1 + rng.normal(0, 0.2, shape)
        else:
            value = rng.normal(0, 0.5, shape)
        variable.assign(value.astype("float32"))
    return encoder


def images(encoder, seed=0):
    h, w = encoder.image_size
    return np.random.default_rng(seed).normal(0, 1, (2, h, w, 3)).astype(np.float32)


def read_exported(path):
    """The exported file read the way torch code reads it."""
    if str(path).endswith(".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in state.items()}
    from safetensors.torch import load_file

    return {k: v.numpy() for k, v in load_file(path).items()}


# -- round trip and torch parity ---------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("overrides", [DEFAULT, VARIANT], ids=["default", "variant"])
def test_round_trip_and_torch_parity(tmp_path, suffix, overrides):
    encoder = random_encoder(seed=1, **overrides)
    paths = export_timm.export_to_timm(encoder, tmp_path / f"encoder{suffix}")
    assert paths["weights"].endswith(suffix) and paths["config"].endswith("encoder.json")
    x = images(encoder, seed=1)
    want = to_numpy(encoder(x))

    # Round trip: the MAE converter reads the file back to the same encoder.
    checkpoint = torch_files.load_mae_state_dict(paths["weights"])
    back = convert_mae.convert_mae_state_dict(
        checkpoint.state_dict, num_heads=HEADS, image_size=encoder.image_size
    )
    assert back.get_config() | {"name": None} == encoder.get_config() | {"name": None}
    assert len(back.weights) == len(encoder.weights)
    for mine, theirs in zip(encoder.weights, back.weights):
        np.testing.assert_array_equal(to_numpy(theirs), to_numpy(mine), err_msg=mine.path)
    round_trip = max_diff(to_numpy(back(x)), want)

    # Parity: the file, read as torch code reads it, in the plain torch ViT forward.
    state = read_exported(paths["weights"])
    assert ("blocks.0.attn.qkv.bias" in state) == encoder.qkv_bias
    torch_features = ref_encoder(state, x, heads=HEADS, depth=DEPTH)
    assert torch_features.shape == want.shape == (2, 1 + encoder.num_patches, WIDTH)
    cls_diff = max_diff(want[:, 0], torch_features[:, 0])
    patch_diff = max_diff(want[:, 1:], torch_features[:, 1:])
    print(f"[{keras.backend.backend()}] {suffix} {overrides}: round trip {round_trip:.1e}; "
          f"torch parity cls {cls_diff:.1e}, patches {patch_diff:.1e}")
    assert round_trip <= ROUND_TRIP_ATOL
    assert cls_diff < PARITY_ATOL and patch_diff < PARITY_ATOL
    # Not trivially close: the features vary across tokens and images.
    assert np.std(torch_features[:, 1:]) > 0.5 and max_diff(torch_features[0], torch_features[1]) > 0.5


def test_layouts_pos_embed_and_json(tmp_path):
    encoder = random_encoder(seed=3)
    paths = export_timm.export_to_timm(encoder, tmp_path / "vit")  # no suffix: safetensors
    assert paths["weights"] == str(tmp_path / "vit.safetensors")
    state = read_exported(paths["weights"])
    grid = IMAGE // PATCH
    assert state["patch_embed.proj.weight"].shape == (WIDTH, 3, PATCH, PATCH)
    assert state["blocks.1.mlp.fc1.weight"].shape == (4 * WIDTH, WIDTH)
    np.testing.assert_array_equal(state["blocks.1.mlp.fc1.weight"],
                                  to_numpy(encoder.blocks[1].fc1.kernel).T)
    assert state["pos_embed"].shape == (1, 1 + grid * grid, WIDTH)
    np.testing.assert_array_equal(state["pos_embed"][0, 0], np.zeros(WIDTH))
    np.testing.assert_array_equal(state["pos_embed"][0, 1:],
                                  to_numpy(encoder.position_embedding.embedding))
    with open(paths["config"]) as f:
        config = json.load(f)
    assert config["timm_kwargs"] == {
        "img_size": [IMAGE, IMAGE], "patch_size": PATCH, "in_chans": 3, "embed_dim": WIDTH,
        "depth": DEPTH, "num_heads": HEADS, "mlp_ratio": 4.0, "qkv_bias": True,
    }
    assert config["layer_norm_eps"] == 1e-6
    assert config["mean"] == list(IMAGENET_MEAN) and config["std"] == list(IMAGENET_STD)


# -- refusals: one line, naming what is wrong -----------------------------------------------


class _EncoderWithAnExtraWeight(ViTEncoder):
    def build(self, input_shape=None):
        super().build(input_shape)
        self.extra = self.add_weight(name="extra", shape=(3,))


def _one_line(error):
    text = str(error.value)
    assert "\n" not in text, text
    return text


def test_what_the_naming_cannot_express_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"uses LayerScale \(layer_scale_init_value=0.1\)") as e:
        export_timm.export_to_timm(random_encoder(layer_scale_init_value=0.1), tmp_path / "a")
    _one_line(e)
    extra = _EncoderWithAnExtraWeight(IMAGE, PATCH, WIDTH, DEPTH, HEADS)
    extra.build()
    with pytest.raises(ValueError, match=r"its weights .*extra have no name there") as e:
        export_timm.export_to_timm(extra, tmp_path / "b")
    _one_line(e)
    with pytest.raises(ValueError, match="not built") as e:
        export_timm.export_to_timm(ViTEncoder(IMAGE, PATCH, WIDTH, DEPTH, HEADS), tmp_path / "c")
    _one_line(e)
    assert not os.listdir(tmp_path)  # nothing was written


def test_output_names_and_existing_files(tmp_path):
    encoder = random_encoder(seed=4)
    with pytest.raises(ValueError, match=r"name the weights file .safetensors .* not '.bin'") as e:
        export_timm.export_to_timm(encoder, tmp_path / "vit.bin")
    _one_line(e)
    first = export_timm.export_to_timm(encoder, tmp_path / "vit.safetensors")
    # The permissions this user's files get (safetensors' own writer makes 0600 files).
    modes = {os.stat(first[k]).st_mode & 0o777 for k in ("weights", "config")}
    assert len(modes) == 1, modes
    # The other format beside it shares the (identical) JSON.
    second = export_timm.export_to_timm(encoder, tmp_path / "vit.pth")
    assert first["config"] == second["config"]
    with pytest.raises(ValueError, match=r"vit.pth already exists.*--overwrite") as e:
        export_timm.export_to_timm(encoder, tmp_path / "vit.pth")
    _one_line(e)
    other = random_encoder(seed=4, num_heads=2)  # another architecture, same name
    with pytest.raises(ValueError, match=r"vit.safetensors and .*vit.json already exist"):
        export_timm.export_to_timm(other, tmp_path / "vit.safetensors")
    export_timm.export_to_timm(other, tmp_path / "vit.safetensors", overwrite=True)
    with open(first["config"]) as f:
        assert json.load(f)["timm_kwargs"]["num_heads"] == 2
    assert sorted(os.listdir(tmp_path)) == ["vit.json", "vit.pth", "vit.safetensors"]


def test_safetensors_needs_no_torch_and_pth_says_it_does(monkeypatch, tmp_path):
    state = {"cls_token": np.ones((1, 1, 4), np.float32)}
    monkeypatch.setitem(sys.modules, "torch", None)
    torch_files.save_state_dict(state, tmp_path / "w.safetensors", "safetensors")
    with pytest.raises(ImportError, match=r"Writing a .pth file needs PyTorch") as e:
        torch_files.save_state_dict(state, tmp_path / "w.pth", "pth")
    _one_line(e)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_exported(tmp_path / "w.safetensors")["cls_token"],
                                  state["cls_token"])
    assert not (tmp_path / "w.pth").exists()


# -- the binary ------------------------------------------------------------------------------


def _run_binary(*flags):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "export_timm.py"), *flags],
                          capture_output=True, text=True, env=env, timeout=300)


# (the whole file is slow; these run subprocesses importing Keras)
def test_binary_exports_a_workdirs_encoder(tmp_path):
    encoder = random_encoder(seed=5)
    save_to_preset(encoder, tmp_path / "workdir" / "encoder")
    out = tmp_path / "exported" / "vit.pth"
    result = _run_binary(f"--source={tmp_path / 'workdir'}", f"--output={out}")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["weights"] == str(out)
    x = images(encoder, seed=5)
    assert max_diff(to_numpy(encoder(x)), ref_encoder(read_exported(out), x)) < PARITY_ATOL

    result = _run_binary(f"--source={tmp_path / 'workdir'}")  # no --output
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: Pass --source=WORKDIR_OR_PRESET and --output=FILE.safetensors."]
