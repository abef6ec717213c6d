"""A small MAE-named ViT and an independent torch forward of it.

The references are written from MAE's definitions (timm names and shapes,
`get_2d_sincos_pos_embed`'s formula, pre-norm blocks with exact GELU and
LayerNorm eps 1e-6), in float64 torch, for the converter's and the
exporter's tests to compare the Keras model on the backend under test with.
torch builds the reference on every backend.
"""

import numpy as np
import torch
import torch.nn.functional as F

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
    qkv = F.linear(h, sd[f"{prefix}.attn.qkv.weight"], sd.get(f"{prefix}.attn.qkv.bias"))
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


def to_torch(sd):
    return {k: torch.from_numpy(np.array(v)) for k, v in sd.items()}
