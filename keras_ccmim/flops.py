"""FLOP model of a pretraining step (the spec's "Cost of a step").

What is counted (a multiply-add is 2 FLOPs; everything per image):

* **Transformer block, forward**: `2*n*D^2*(4 + 2*r) + 4*n^2*D` for `n`
  tokens of width `D` and MLP ratio `r`: the QKV projection (`6nD^2`), the
  output projection (`2nD^2`), the MLP (`4rnD^2`) and the two attention
  matmuls `QK^T` and `AV` (`2n^2D` each). With `r = 4` this is the spec's
  `24*n*D^2 + 4*n^2*D`. Token counts include [CLS].
* **Patch embedding, forward** (`count_patch_embedding`, default on):
  `2*N*(p*p*C)*D`, once per step over all `N` patches (positions are added
  before any token is dropped, so the embedding runs on every patch).
* **Decoder input/output maps** (`count_decoder_io`, default off): the
  linear map to the decoder width over `1+V` tokens and the pixel head over
  `1+N` tokens.
* Not counted: LayerNorm, GELU, softmax, the masking, the losses and the
  projector heads (each well under 1% at the sizes we run), and the
  optimizer update.

The passes of a step:

* **student**: `[CLS] + V` visible tokens through all encoder blocks;
* **decoder**: `1 + N` tokens through the decoder blocks at decoder width;
* **scoring** (ccMIM only, no gradient): `1 + N` tokens through the blocks up
  to and including the deepest scoring layer (the spec's convention; the
  implementation computes only the QKV projection and the [CLS] attention
  row in that deepest block, so this slightly over-counts);
* **teacher** (ccMIM with a contrastive term, no gradient): `[CLS] + K`
  masked tokens through all encoder blocks.

A training step is `3x` the forward of what has a gradient (student,
decoder, patch embedding, decoder maps) plus `1x` the forward-only passes.

Which convention reproduces the published numbers:

* The spec's ViT-B/16 figures (full forward 35.1 GFLOPs per image, MAE step
  ~58, ccMIM step ~119, ratio ~2.05) are reproduced with [CLS] in every
  token count *and* the patch embedding counted (35.13 / 58.10 / 118.94 /
  2.047). Blocks alone give 34.89 / 57.41 / 118.25 / 2.060.
* The performance notes' tiny32 figures (MAE 716 MFLOP, full forward 729,
  masked-set forward 542, ccMIM 1987, ratio 2.78) are blocks only, with
  [CLS] (715.8 / 729.0 / 542.3 / 1987.2 / 2.776); with the patch embedding
  they become 719.3 / 1990.7 / 2.768.

The library's default (used by the benchmarks) is the spec's: blocks with
[CLS] plus the patch embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from keras_ccmim.layers.importance_scorer import resolve_score_layers
from keras_ccmim.layers.patch_selector import num_masked_patches

if TYPE_CHECKING:
    from keras_ccmim.models.ccmim_pretrainer import CCMIMPretrainer

TRAINING_MULTIPLIER = 3  # forward + backward (grads w.r.t. inputs and weights)


def block_forward_flops(num_tokens: int, width: int, mlp_ratio: float = 4.0) -> int:
    """Forward FLOPs of one pre-norm ViT block over `num_tokens` tokens."""
    n, d = int(num_tokens), int(width)
    return int(round(2 * n * d * d * (4 + 2 * float(mlp_ratio)))) + 4 * n * n * d


def encoder_forward_flops(
    num_tokens: int, width: int, num_layers: int, mlp_ratio: float = 4.0
) -> int:
    """Forward FLOPs of `num_layers` blocks over `num_tokens` tokens."""
    return int(num_layers) * block_forward_flops(num_tokens, width, mlp_ratio)


@dataclasses.dataclass(frozen=True)
class StepFlops:
    """Per-image forward FLOPs of each pass, and the step totals.

    Forward-pass fields (FLOPs per image, one forward): `patch_embedding`,
    `full_encoder` (blocks over all `1+N` tokens), `student`, `decoder`,
    `decoder_io`, `scoring` (0 when not scoring), `teacher` (0 without a
    contrastive term). `mae_*` properties give the MAE step of the same
    architecture whatever the configured masking.
    """

    patch_embedding: int
    full_encoder: int
    student: int
    decoder: int
    decoder_io: int
    scoring: int
    teacher: int
    # Forward-only passes the ccMIM defaults would run (for the ratio).
    ccmim_scoring: int
    ccmim_teacher: int

    @property
    def full_forward(self) -> int:
        """Encoder forward over the whole image ([CLS] + all patches)."""
        return self.patch_embedding + self.full_encoder

    @property
    def with_gradient(self) -> int:
        return self.patch_embedding + self.student + self.decoder + self.decoder_io

    @property
    def mae_step(self) -> int:
        """Training FLOPs per image of the MAE step (no scoring, no teacher)."""
        return TRAINING_MULTIPLIER * self.with_gradient

    @property
    def step(self) -> int:
        """Training FLOPs per image of the configured step."""
        return self.mae_step + self.scoring + self.teacher

    @property
    def ccmim_step(self) -> int:
        """Training FLOPs per image of the ccMIM step (defaults: score, teach)."""
        return self.mae_step + self.ccmim_scoring + self.ccmim_teacher

    @property
    def ccmim_to_mae_ratio(self) -> float:
        return self.ccmim_step / self.mae_step

    def as_dict(self) -> dict[str, int | float]:
        out = dataclasses.asdict(self)
        out.update(
            full_forward=self.full_forward,
            mae_step=self.mae_step,
            step=self.step,
            ccmim_step=self.ccmim_step,
            ccmim_to_mae_ratio=self.ccmim_to_mae_ratio,
        )
        return out


def step_flops(
    image_size: int | Sequence[int],
    patch_size: int,
    hidden_dim: int,
    num_layers: int,
    decoder_hidden_dim: int,
    decoder_num_layers: int,
    mlp_ratio: float = 4.0,
    num_channels: int = 3,
    mask_ratio: float = 0.75,
    score_layers: Literal["all", "last"] | Sequence[int] = "all",
    scoring: bool = True,
    teacher: bool = True,
    count_patch_embedding: bool = True,
    count_decoder_io: bool = False,
    **unused: Any,
) -> StepFlops:
    """FLOPs per image of each pass of a pretraining step.

    Args:
        image_size: int or `(H, W)`.
        patch_size: int `p`.
        hidden_dim, num_layers: encoder width and depth.
        decoder_hidden_dim, decoder_num_layers: decoder width and depth.
        mlp_ratio: MLP ratio of encoder and decoder blocks.
        num_channels: image channels.
        mask_ratio: `r`; `K = round(N*r)` as the model computes it.
        score_layers: `"all"`, `"last"` or indices: the scoring pass runs up
            to the deepest one.
        scoring: whether the configured step runs a scoring pass
            (importance masking).
        teacher: whether the configured step runs a teacher pass (a
            contrastive term).
        count_patch_embedding: count the patch embedding matmul.
        count_decoder_io: count the decoder's input map and pixel head.
        **unused: other config keys (e.g. `num_heads`), ignored.

    Returns:
        A `StepFlops`.
    """
    del unused
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    p = int(patch_size)
    n = (int(h) // p) * (int(w) // p)
    k = num_masked_patches(n, mask_ratio)
    v = n - k
    d, dd = int(hidden_dim), int(decoder_hidden_dim)
    patch_dim = p * p * int(num_channels)
    depth = int(num_layers)
    deepest = max(resolve_score_layers(score_layers, depth)) + 1

    enc = lambda tokens, layers=depth: encoder_forward_flops(tokens, d, layers, mlp_ratio)  # noqa: E731
    ccmim_scoring = enc(n + 1, deepest)
    ccmim_teacher = enc(k + 1)
    return StepFlops(
        patch_embedding=2 * n * patch_dim * d if count_patch_embedding else 0,
        full_encoder=enc(n + 1),
        student=enc(v + 1),
        decoder=encoder_forward_flops(n + 1, dd, decoder_num_layers, mlp_ratio),
        decoder_io=(2 * (v + 1) * d * dd + 2 * (n + 1) * dd * patch_dim) if count_decoder_io else 0,
        scoring=ccmim_scoring if scoring else 0,
        teacher=ccmim_teacher if teacher else 0,
        ccmim_scoring=ccmim_scoring,
        ccmim_teacher=ccmim_teacher,
    )


def preset_step_flops(
    name: str,
    encoder_overrides: Mapping[str, Any] | None = None,
    decoder_overrides: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> StepFlops:
    """`step_flops` for a named preset (see `keras_ccmim.models.presets`).

    `encoder_overrides` / `decoder_overrides` change the preset's sizes
    (decoder keys `hidden_dim`, `num_layers`); other keyword arguments go to
    `step_flops`.
    """
    from keras_ccmim.models.presets import get_preset

    preset = get_preset(name)
    encoder = dict(preset["encoder"], **(encoder_overrides or {}))
    decoder = dict(preset["decoder"], **(decoder_overrides or {}))
    return step_flops(
        decoder_hidden_dim=decoder["hidden_dim"],
        decoder_num_layers=decoder["num_layers"],
        **encoder,
        **kwargs,
    )


def model_step_flops(model: CCMIMPretrainer, **kwargs: Any) -> StepFlops:
    """`step_flops` of a built or unbuilt `CCMIMPretrainer`, as configured."""
    enc = model.encoder
    return step_flops(
        image_size=enc.image_size,
        patch_size=enc.patch_size,
        hidden_dim=enc.hidden_dim,
        num_layers=enc.num_layers,
        decoder_hidden_dim=model.decoder_hidden_dim,
        decoder_num_layers=model.decoder_num_layers,
        mlp_ratio=enc.mlp_ratio,
        num_channels=enc.num_channels,
        mask_ratio=model.mask_ratio,
        score_layers=model.score_layers,
        scoring=model.selector.needs_scores,
        teacher=model.projector is not None,
        **kwargs,
    )
