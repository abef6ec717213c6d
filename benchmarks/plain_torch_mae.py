r"""The library's MAE step on the torch backend against a plain-PyTorch MAE
of the same shapes, timed in interleaved rounds of one process.

The plain-PyTorch model is written here, independent of Keras' layers and
of the library (its position table is the NumPy function of the plain-Keras
yardstick, `benchmarks/reference_mae.py`): `nn.Linear`, `nn.LayerNorm`, `F.scaled_dot_product_attention`,
GELU, pre-norm blocks with an MLP ratio of 4, random masking by argsort of
uniform noise, a narrower decoder with mask tokens, the normalised-pixel MSE
on the masked patches, and `torch.optim.AdamW` (its default multi-tensor
update). It is what any eager PyTorch MAE does per step, so `library /
plain` says what Keras-on-torch and the library's layers cost on top of
PyTorch itself on this machine, whatever the matmul library costs both.

    python benchmarks/plain_torch_mae.py --output=/tmp/plain_torch.json

Prints the machine, each step's median img/s over --repeats rounds (each
round runs --steps steps of each model, the order alternating) and the
median of the per-round time ratios. `--profile_steps=3` also prints each
step's wall time under `torch.profiler`, its ops' total self time and the
ops that take the most, side by side (milliseconds per step).
"""

import json
import os
import statistics
import time

os.environ["KERAS_BACKEND"] = "torch"

from absl import app, flags  # noqa: E402

from benchmarks.hardware import hardware_label  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "vit_tiny_patch4_32", "Model preset (sizes of both models).")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("steps", 4, "Steps per model per round.")
flags.DEFINE_integer("warmup_steps", 3, "Untimed steps of each model first.")
flags.DEFINE_integer("repeats", 5, "Rounds; medians are reported.")
flags.DEFINE_string("output", None, "Optional JSON file for the figures.")
flags.DEFINE_integer("profile_steps", 0, "Also profile this many steps of each model with "
                     "torch.profiler and print the op self times side by side.")


def plain_mae(image_size, patch_size, hidden_dim, num_layers, num_heads, decoder_hidden_dim,
              decoder_num_layers, decoder_num_heads, mask_ratio=0.75):
    """A plain-PyTorch MAE `nn.Module`: `model(images NHWC) -> loss`."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from benchmarks.reference_mae import sincos_table

    grid = image_size // patch_size
    num_patches = grid * grid
    num_visible = int(num_patches * (1 - mask_ratio))

    def sincos(dim):  # the yardstick's table (plain NumPy)
        return torch.tensor(sincos_table(grid, dim), dtype=torch.float32)

    class Block(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
            self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

        def forward(self, x):
            b, t, d = x.shape
            qkv = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attn = F.scaled_dot_product_attention(q, k, v)
            x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class MAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(3, hidden_dim, patch_size, stride=patch_size)
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden_dim))
            self.register_buffer("pos", sincos(hidden_dim))
            self.register_buffer("dec_pos", sincos(decoder_hidden_dim))
            self.blocks = nn.ModuleList(Block(hidden_dim, num_heads) for _ in range(num_layers))
            self.norm = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.to_decoder = nn.Linear(hidden_dim, decoder_hidden_dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_hidden_dim))
            self.dec_blocks = nn.ModuleList(Block(decoder_hidden_dim, decoder_num_heads)
                                            for _ in range(decoder_num_layers))
            self.dec_norm = nn.LayerNorm(decoder_hidden_dim, eps=1e-6)
            self.pixels = nn.Linear(decoder_hidden_dim, patch_size * patch_size * 3)

        def forward(self, images):
            b = images.shape[0]
            nchw = images.permute(0, 3, 1, 2)
            tokens = self.embed(nchw).flatten(2).transpose(1, 2) + self.pos
            order = torch.argsort(torch.rand(b, num_patches), dim=1)
            restore = torch.argsort(order, dim=1)
            keep = order[:, :num_visible]
            x = torch.gather(tokens, 1, keep[..., None].expand(-1, -1, hidden_dim))
            x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)
            for block in self.blocks:
                x = block(x)
            x = self.to_decoder(self.norm(x))
            masked = self.mask_token.expand(b, num_patches - num_visible, -1)
            patches = torch.cat([x[:, 1:], masked], dim=1)
            patches = torch.gather(patches, 1,
                                   restore[..., None].expand(-1, -1, decoder_hidden_dim))
            x = torch.cat([x[:, :1], patches + self.dec_pos], dim=1)
            for block in self.dec_blocks:
                x = block(x)
            prediction = self.pixels(self.dec_norm(x))[:, 1:]
            target = nchw.reshape(b, 3, grid, patch_size, grid, patch_size)
            target = target.permute(0, 2, 4, 3, 5, 1).reshape(b, num_patches, -1)
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
            error = ((prediction - target) ** 2).mean(-1)
            is_masked = (restore >= num_visible).float()
            return (error * is_masked).sum() / is_masked.sum()

    return MAE()


def op_profile(step, count):
    """`{"wall_ms", "op_ms", "ops": {aten op: self ms}}` per step of `step`
    over `count` steps under `torch.profiler`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(count):
            step()
        wall = (time.perf_counter() - start) / count
    ops = {e.key: e.self_cpu_time_total / 1e3 / count for e in prof.key_averages()
           if e.key.startswith("aten::")}
    return {"wall_ms": 1e3 * wall, "op_ms": sum(ops.values()), "ops": ops}


def print_profiles(profiles, top=12):
    names = list(profiles)
    print("| ms per step | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for row in ("wall_ms", "op_ms"):
        print(f"| {row} | " + " | ".join(f"{profiles[n][row]:.1f}" for n in names) + " |")
    totals = {}
    for profile in profiles.values():
        for op, ms in profile["ops"].items():
            totals[op] = totals.get(op, 0.0) + ms
    for op in sorted(totals, key=totals.get, reverse=True)[:top]:
        print(f"| {op} | " + " | ".join(f"{profiles[n]['ops'].get(op, 0.0):.1f}"
                                       for n in names) + " |")


def main(argv):
    del argv
    import keras
    import numpy as np
    import torch

    from keras_ccmim import CCMIMPretrainer
    from keras_ccmim.models.presets import get_preset
    from keras_ccmim.training.optimizer import make_optimizer

    if keras.backend.backend() != "torch":
        raise app.UsageError("Run with KERAS_BACKEND=torch (or unset).")
    preset = get_preset(FLAGS.preset)
    enc, dec = preset["encoder"], preset["decoder"]
    size = enc["image_size"]
    images = torch.tensor(np.random.RandomState(0).rand(FLAGS.batch_size, size, size, 3),
                          dtype=torch.float32)
    keras.utils.set_random_seed(0)
    library = CCMIMPretrainer.from_architecture(FLAGS.preset, masking="random",
                                                contrastive="none", seed=0)
    library.compile(optimizer=make_optimizer(library, 1e-4))
    plain = plain_mae(**enc, decoder_hidden_dim=dec["hidden_dim"],
                      decoder_num_layers=dec["num_layers"], decoder_num_heads=dec["num_heads"])
    optimizer = torch.optim.AdamW(plain.parameters(), lr=1e-4, betas=(0.9, 0.95),
                                  weight_decay=0.05)

    def plain_step():
        optimizer.zero_grad(set_to_none=True)
        loss = plain(images)
        loss.backward()
        optimizer.step()
        return loss

    steps = {"library": lambda: library.train_on_batch(images), "plain": plain_step}
    for step in steps.values():
        for _ in range(FLAGS.warmup_steps):
            step()
    seconds = {name: [] for name in steps}
    for round_index in range(FLAGS.repeats):
        order = list(steps) if round_index % 2 == 0 else list(steps)[::-1]
        for name in order:
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                steps[name]()
            seconds[name].append((time.perf_counter() - start) / FLAGS.steps)
    ratio = statistics.median(a / b for a, b in zip(seconds["library"], seconds["plain"]))
    profiles = {name: op_profile(step, FLAGS.profile_steps) for name, step in steps.items()
                if FLAGS.profile_steps > 0}
    summary = {
        "hardware": hardware_label(), "torch": torch.__version__, "keras": keras.__version__,
        "threads": torch.get_num_threads(), "preset": FLAGS.preset,
        "batch_size": FLAGS.batch_size, "steps": FLAGS.steps, "repeats": FLAGS.repeats,
        "parameters": {"library": int(sum(np.prod(v.shape) for v in library.trainable_weights)),
                       "plain": int(sum(p.numel() for p in plain.parameters()))},
        "seconds_per_step": seconds,
        "images_per_second": {k: FLAGS.batch_size / statistics.median(v)
                              for k, v in seconds.items()},
        "library_time_over_plain": ratio,
        "profiles": profiles,
    }
    print(f"machine: {summary['hardware']}; torch {torch.__version__}, {summary['threads']} threads")
    for name, rate in summary["images_per_second"].items():
        print(f"{name} MAE step: {rate:.1f} img/s ({summary['parameters'][name]:,} parameters)")
    print(f"library / plain PyTorch step time: {ratio:.3f} (median of {FLAGS.repeats} rounds)")
    if profiles:
        print_profiles(profiles)
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    app.run(main)
