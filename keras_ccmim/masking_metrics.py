"""How much a mask prefers the object: foreground lift, its ceiling, selectivity.

All three are pooled over a batch (sums over every image, then one ratio), so
they weigh each masked patch the same.

* `foreground_lift`: (share of masked patches that are foreground) / (share
  of all patches that are foreground). Random masking gives 1 in
  expectation. It can never exceed `min(N/K, 1/foreground share)`, so a lift
  alone cannot be read without its ceiling.
* `foreground_lift_max`: that ceiling for the same images and the same K:
  the lift of a selector that masks foreground patches first,
  `sum_i min(K_i, F_i) / sum_i K_i / mean(fg)`.
* `mask_selectivity = (lift - 1) / (lift_max - 1)`: 0 for random masking, 1
  for foreground first, negative when the masking avoids the object; 0 when
  the ceiling is 1 (no image has both foreground and background to choose
  between).
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_ccmim.type_aliases import Tensor

# Names under which these enter logs, metrics.csv, TensorBoard and results.json.
MASKING_METRICS = ("foreground_lift", "foreground_lift_max", "mask_selectivity")
_MIN_SPAN = 1e-6


def _masked_and_foreground(mask, foreground_patches):
    return ops.cast(mask, "float32"), ops.cast(foreground_patches, "float32")


def foreground_lift(mask: Tensor, foreground_patches: Tensor) -> Tensor:
    """(fraction of masked patches that are foreground) /
    (fraction of all patches that are foreground), over a batch.

    Args:
        mask: `[B, N]` 1 = masked.
        foreground_patches: `[B, N]` 1 = foreground patch.
    """
    mask, fg = _masked_and_foreground(mask, foreground_patches)
    masked_fg = ops.sum(mask * fg) / ops.maximum(ops.sum(mask), 1.0)
    return masked_fg / ops.maximum(ops.mean(fg), 1e-6)


def foreground_lift_max(mask: Tensor, foreground_patches: Tensor) -> Tensor:
    """The highest `foreground_lift` any selector of the same number of masked
    patches per image (`K_i = sum_j mask[i, j]`) can reach on these images:
    every image masks `min(K_i, F_i)` foreground patches."""
    mask, fg = _masked_and_foreground(mask, foreground_patches)
    per_image_k = ops.sum(mask, axis=-1)
    best = ops.sum(ops.minimum(per_image_k, ops.sum(fg, axis=-1)))
    masked_fg = best / ops.maximum(ops.sum(per_image_k), 1.0)
    return masked_fg / ops.maximum(ops.mean(fg), 1e-6)


def mask_selectivity(lift: Tensor, lift_max: Tensor) -> Tensor:
    """`(lift - 1) / (lift_max - 1)`; 0 where `lift_max - 1 < 1e-6`."""
    span = lift_max - 1.0
    safe = ops.where(span < _MIN_SPAN, 1.0, span)
    return ops.where(span < _MIN_SPAN, 0.0, (lift - 1.0) / safe)


def masking_metrics(mask: Tensor, foreground_patches: Tensor) -> dict[str, float]:
    """The three metrics of a `[B, N]` mask as Python floats, keyed by
    `MASKING_METRICS`."""
    lift = foreground_lift(mask, foreground_patches)
    lift_max = foreground_lift_max(mask, foreground_patches)
    values = (lift, lift_max, mask_selectivity(lift, lift_max))
    return {
        name: float(np.asarray(ops.convert_to_numpy(v)).reshape(()))
        for name, v in zip(MASKING_METRICS, values)
    }


def random_masking_metrics(
    mask: Tensor, foreground_patches: Tensor, draws: int = 100, seed: int = 0
) -> dict[str, dict[str, float]]:
    """What uniformly random masking with the same per-image K gets on the
    same images: the mean and standard deviation of each metric over
    `draws` random masks (numpy, seeded).

    Returns:
        `{name: {"mean": float, "std": float}}` for each of `MASKING_METRICS`.
    """
    mask = np.asarray(ops.convert_to_numpy(mask), dtype="float32")
    fg = np.asarray(ops.convert_to_numpy(foreground_patches), dtype="float32")
    per_image_k = mask.sum(axis=-1).astype("int64")
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in MASKING_METRICS}
    for _ in range(int(draws)):
        ranks = np.argsort(np.argsort(rng.random(mask.shape), axis=-1), axis=-1)
        random_mask = (ranks < per_image_k[:, None]).astype("float32")
        for name, value in masking_metrics(random_mask, fg).items():
            samples[name].append(value)
    return {
        name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in samples.items()
    }
