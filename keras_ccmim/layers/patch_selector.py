"""Choosing which patches to mask (ccMIM step 3), always with static shapes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal, get_args

import keras
from keras import ops

from keras_ccmim import checks
from keras_ccmim.type_aliases import Tensor

MaskingStrategy = Literal["importance_sampling", "importance", "random", "block"]
MASKING_STRATEGIES = get_args(MaskingStrategy)
Sampler = Literal["gumbel", "uniform_noise"]
SAMPLERS = get_args(Sampler)
_EPS = 1e-12


def num_masked_patches(num_patches: int, mask_ratio: float) -> int:
    """`K = round(N * r)`, kept within `[1, N - 1]` so both sets are non-empty."""
    return int(min(max(round(num_patches * mask_ratio), 1), num_patches - 1))


@keras.saving.register_keras_serializable(package="keras_ccmim")
class PatchSelector(keras.layers.Layer):
    """Splits the N patches of each image into K masked and V visible ones.

    Strategies (`masking`):
      * `"importance_sampling"`: K patches sampled without replacement with
        probability proportional to `s^(1/T)`. `sampler="gumbel"` ranks
        `log(s)/T + g`, `g ~ Gumbel(0, 1)` (Gumbel-top-K, exact sampling
        without replacement); `sampler="uniform_noise"` ranks
        `attention_sum - u`, `u ~ U(0, 1)` (the public ccMIM code's rule).
      * `"importance"`: deterministic top-K of `s`.
      * `"random"`: uniformly random K patches (MAE).
      * `"block"`: BEiT-style rectangular blocks of at least 16 patches with
        aspect ratio in [0.3, 1/0.3], added until the next block would pass
        K, then filled from that next block first and at random after it.

    Args:
        grid_size: int or `(rows, cols)` of the patch grid; `N = rows*cols`.
        mask_ratio: fraction of patches masked, in (0, 1).
        masking: one of `MASKING_STRATEGIES`.
        sampler: one of `SAMPLERS` (importance sampling only).
        sampling_temperature: `T > 0` (`T_s` of the paper); with
            `sampling_temperature_start`, the temperature the schedule ends at.
        sampling_temperature_start: optional `T` of the first training step.
            When set, `T` falls from it to `sampling_temperature` along a half
            cosine over `sampling_temperature_steps` training calls and then
            stays there:
            `T(t) = T_end + (T_start - T_end) * (1 + cos(pi * min(t / S, 1))) / 2`.
            The position `t` is a non-trainable variable of the layer
            (`temperature_step`, counted in `call(..., training=True)`), so it
            is saved with the weights and resumes with them.
        sampling_temperature_steps: `S`, training steps of the schedule (> 0
            when `sampling_temperature_start` is set).
        seed: optional int seed of the layer's `SeedGenerator`.

    Call:
        patch_tokens: `[B, N, ...]`, used for its batch size.
        scores: `[B, N]` importance (sums to 1), needed by the importance
            strategies.
        attention_sum: `[B, N]` summed [CLS] attention, needed by
            `sampler="uniform_noise"`.
        Returns a dict: `ids_keep [B, V]`, `ids_mask [B, K]`,
        `ids_restore [B, N]` (the inverse of `concat(ids_keep, ids_mask)`),
        `mask [B, N]` (1.0 = masked), all int32 but `mask` (float32).
    """

    def __init__(
        self,
        grid_size: int | Sequence[int],
        mask_ratio: float = 0.75,
        masking: MaskingStrategy = "importance_sampling",
        sampler: Sampler = "gumbel",
        sampling_temperature: float = 1.0,
        sampling_temperature_start: float | None = None,
        sampling_temperature_steps: int = 0,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.grid_size = (
            (int(grid_size), int(grid_size))
            if isinstance(grid_size, int)
            else tuple(int(g) for g in grid_size)
        )
        checks.check_fraction("mask_ratio", mask_ratio, " (ccMIM and MAE use 0.75.)")
        checks.check_choice("masking", masking, MASKING_STRATEGIES)
        checks.check_choice("sampler", sampler, SAMPLERS)
        checks.check_positive("sampling_temperature", sampling_temperature)
        checks.check_int("sampling_temperature_steps", sampling_temperature_steps, 0)
        if sampling_temperature_start is not None:
            checks.check_positive("sampling_temperature_start", sampling_temperature_start)
            if masking != "importance_sampling":
                raise ValueError(
                    f"sampling_temperature_start anneals importance sampling, but masking is "
                    f"{masking!r}. Use masking='importance_sampling' or leave "
                    "sampling_temperature_start unset."
                )
            if sampling_temperature_steps <= 0:
                raise ValueError(
                    "A sampling temperature schedule needs sampling_temperature_steps > 0 "
                    f"(the training steps it spans), got {sampling_temperature_steps}."
                )
        self.mask_ratio = float(mask_ratio)
        self.masking = masking
        self.sampler = sampler
        self.temperature = float(sampling_temperature)
        self.temperature_start = (
            None if sampling_temperature_start is None else float(sampling_temperature_start)
        )
        self.temperature_steps = int(sampling_temperature_steps)
        self.temperature_step = None
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_masked = num_masked_patches(self.num_patches, self.mask_ratio)
        self.num_visible = self.num_patches - self.num_masked

    @property
    def needs_scores(self) -> bool:
        return self.masking in ("importance_sampling", "importance")

    @property
    def scheduled(self) -> bool:
        return self.temperature_start is not None

    def build(self, input_shape: Sequence[int | None] | None = None) -> None:
        if self.scheduled and self.temperature_step is None:
            # float32: exact to 2**24 steps, and no integer-variable placement
            # issues under tf.distribute; only the first replica counts.
            self.temperature_step = self.add_weight(
                shape=(),
                initializer="zeros",
                dtype="float32",
                trainable=False,
                aggregation="only_first_replica",
                name="temperature_step",
            )
        self.built = True

    def current_temperature(self) -> float | Tensor:
        """`T` now: the constant, or the schedule at `temperature_step`."""
        if not self.scheduled:
            return self.temperature
        if self.temperature_step is None:
            self.build()
        progress = ops.minimum(
            ops.cast(self.temperature_step, "float32") / float(self.temperature_steps), 1.0
        )
        span = self.temperature_start - self.temperature
        return self.temperature + span * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def _uniform(self, shape):
        return keras.random.uniform(
            shape, minval=_EPS, maxval=1.0, seed=self.seed_generator, dtype="float32"
        )

    def _priority(self, batch, scores, attention_sum, temperature):
        """Higher priority = masked first. `[B, N]` float32."""
        shape = (batch, self.num_patches)
        if self.masking == "random":
            return self._uniform(shape)
        if self.masking == "block":
            return self._block_priority(batch)
        if scores is None:
            raise ValueError(
                f"masking={self.masking!r} needs importance scores; pass `scores`."
            )
        scores = ops.cast(scores, "float32")
        if self.masking == "importance":
            return scores
        if self.sampler == "gumbel":
            gumbel = -ops.log(-ops.log(self._uniform(shape)))
            return ops.log(scores + _EPS) / temperature + gumbel
        if attention_sum is None:
            raise ValueError("sampler='uniform_noise' needs `attention_sum`.")
        return ops.cast(attention_sum, "float32") / temperature - self._uniform(shape)

    def _block_priority(self, batch):
        rows, cols = self.grid_size
        min_area = min(16, self.num_masked)
        max_area = max(min_area, self.num_masked)
        num_blocks = max(8, 3 * math.ceil(self.num_masked / min_area))
        shape = (batch, num_blocks)
        area = min_area + (max_area - min_area) * self._uniform(shape)
        log_ratio = math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * self._uniform(shape)
        aspect = ops.exp(log_ratio)
        height = ops.clip(ops.round(ops.sqrt(area * aspect)), 1, rows)
        width = ops.clip(ops.round(ops.sqrt(area / aspect)), 1, cols)
        top = ops.floor(self._uniform(shape) * (rows - height + 1))
        left = ops.floor(self._uniform(shape) * (cols - width + 1))
        r = ops.reshape(ops.arange(rows, dtype="float32"), (1, 1, rows, 1))
        c = ops.reshape(ops.arange(cols, dtype="float32"), (1, 1, 1, cols))
        inside = (
            (r >= top[..., None, None])
            & (r < (top + height)[..., None, None])
            & (c >= left[..., None, None])
            & (c < (left + width)[..., None, None])
        )
        inside = ops.reshape(ops.cast(inside, "float32"), (batch, num_blocks, self.num_patches))
        # Union of the first m blocks, for every m.
        covered = ops.cast(ops.cumsum(inside, axis=1) > 0, "float32")
        counts = ops.sum(covered, axis=-1)  # [B, M], non-decreasing
        # Number of whole blocks that fit within K.
        fit = ops.sum(ops.cast(counts <= self.num_masked, "int32"), axis=1)  # [B]
        steps = ops.arange(num_blocks, dtype="int32")[None, :]
        chosen = ops.cast(steps < fit[:, None], "float32")  # blocks taken whole
        nxt = ops.cast(steps == fit[:, None], "float32")  # the block that fills
        in_union = ops.max(inside * chosen[..., None], axis=1)
        in_next = ops.max(inside * nxt[..., None], axis=1)
        noise = self._uniform((batch, self.num_patches))
        return 2.0 * in_union + in_next + noise

    def call(
        self,
        patch_tokens: Tensor,
        scores: Tensor | None = None,
        attention_sum: Tensor | None = None,
        training: bool | None = None,
    ) -> dict[str, Tensor]:
        batch = ops.shape(patch_tokens)[0]
        temperature = self.current_temperature()
        if self.scheduled and training:
            self.temperature_step.assign(self.temperature_step + 1.0)
        priority = self._priority(batch, scores, attention_sum, temperature)
        # Descending priority: the first K are masked, the remaining V kept.
        ids_shuffle = ops.cast(ops.argsort(-priority, axis=-1), "int32")
        ids_mask = ids_shuffle[:, : self.num_masked]
        ids_keep = ids_shuffle[:, self.num_masked :]
        ids_shuffle = ops.concatenate([ids_keep, ids_mask], axis=1)
        ids_restore = ops.cast(ops.argsort(ids_shuffle, axis=-1), "int32")
        mask = ops.cast(ids_restore >= self.num_visible, "float32")
        return {
            "ids_keep": ids_keep,
            "ids_mask": ids_mask,
            "ids_restore": ids_restore,
            "mask": mask,
        }

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "grid_size": list(self.grid_size),
                "mask_ratio": self.mask_ratio,
                "masking": self.masking,
                "sampler": self.sampler,
                "sampling_temperature": self.temperature,
                "sampling_temperature_start": self.temperature_start,
                "sampling_temperature_steps": self.temperature_steps,
                "seed": self.seed,
            }
        )
        return config
