"""Patch importance from [CLS] attention (ccMIM step 2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import keras
from keras import ops

from keras_ccmim import checks
from keras_ccmim.layers.transformer_block import (
    CLS_LOGIT_SCALES,
    ClsAttentionKind,
    ClsLogitScale,
)
from keras_ccmim.type_aliases import Tensor

# What the score is computed from (`ImportanceScorer(score_from=...)`): the
# kinds of [CLS] attention row a block returns.
ScoreSource = ClsAttentionKind
SCORE_SOURCES = get_args(ScoreSource)
# What divides the logits of the logit score (`ImportanceScorer(score_scale=...)`).
ScoreScale = ClsLogitScale
SCORE_SCALES = CLS_LOGIT_SCALES
# Which blocks' [CLS] attention the score combines.
ScoreLayers = Literal["all", "last"] | Sequence[int]


def resolve_score_layers(score_layers: ScoreLayers, num_layers: int) -> tuple[int, ...]:
    """Turn `"all"`, `"last"` or a list of indices into sorted layer indices.

    Negative indices count from the end, as in Python.
    """
    if isinstance(score_layers, str):
        if score_layers == "all":
            return tuple(range(num_layers))
        if score_layers == "last":
            return (num_layers - 1,)
        raise ValueError(
            f"score_layers must be 'all', 'last' or a list of layer indices, got {score_layers!r}."
        )
    indices = []
    for index in score_layers:
        index = int(index)
        if not -num_layers <= index < num_layers:
            raise ValueError(
                f"score_layers index {index} is out of range for an encoder with "
                f"{num_layers} blocks (valid: 0..{num_layers - 1} or negative from the end)."
            )
        indices.append(index % num_layers)
    if not indices:
        raise ValueError("score_layers must name at least one layer.")
    return tuple(sorted(set(indices)))


@keras.saving.register_keras_serializable(package="keras_ccmim")
class ImportanceScorer(keras.layers.Layer):
    """Combines per-layer [CLS] attention maps into patch importance scores.

    The scorer owns the score's settings; `CCMIMPretrainer` reads them from
    here. Two definitions (`score_from`), each a distribution over the N
    patches:

    * `"probabilities"` (the probability score, after the public ccMIM
      code's rule): `s = softmax_N(sum_l a_l)`, `a_l [B, N]` the
      head-averaged softmax attention of the [CLS] query over all keys at
      scoring layer `l`, restricted to the patch keys. (The public code
      sums the other direction of the same attention matrices: how much
      each patch's query attends to the [CLS] key.)
    * `"logits"` (the logit score, the paper's Section 3.2):
      `s = softmax_N(mean_l z_l)`, `z_l [B, N]` the head-averaged scaled
      logits `q_0 . k_j / sqrt(d)` of the N patch keys at layer `l` ([CLS]
      key excluded).

    `score_scale` says what `d` is for the logit score: `"head_dim"`
    (default) divides by `sqrt(D / num_heads)`, as the attention itself
    does; `"hidden_dim"` divides by `sqrt(D)`, the paper's formula as
    written (its `D` is the hidden dimension). The two differ by a factor
    `sqrt(num_heads)` in the logits, which is a sampling temperature: with
    the Gumbel sampler, `"hidden_dim"` at `T_s` masks exactly as
    `"head_dim"` at `T_s * sqrt(num_heads)`. The top-K of the score is the
    same under both. The probability score is the blocks' own attention,
    so it has only `"head_dim"`.

    The maps themselves come from
    `ViTEncoder.cls_attention(kind=score_from, scale=score_scale)`, which
    runs the encoder only up to the deepest scoring layer.

    Args:
        score_layers: `"all"` (default), `"last"`, or a list of block indices.
        score_from: `"probabilities"` (default) or `"logits"`.
        score_scale: `"head_dim"` (default) or `"hidden_dim"` (only with
            `score_from="logits"`).

    Call:
        attention_maps: list of `[B, N]` tensors, one per scoring layer.
        Returns `{"scores": [B, N] (sums to 1), "attention_sum": [B, N]}`,
        where `attention_sum` is the softmax's argument (the summed
        probabilities, or the layer-mean logits).
    """

    def __init__(
        self,
        score_layers: ScoreLayers = "all",
        score_from: ScoreSource = "probabilities",
        score_scale: ScoreScale = "head_dim",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if isinstance(score_layers, str):
            resolve_score_layers(score_layers, 1)  # validates the name
        else:
            score_layers = [int(i) for i in score_layers]
        checks.check_choice("score_from", score_from, SCORE_SOURCES)
        checks.check_choice("score_scale", score_scale, SCORE_SCALES)
        if score_from == "probabilities" and score_scale != "head_dim":
            raise ValueError(
                f"score_scale={score_scale!r} applies to the logit score only: the probability "
                "score is the blocks' own attention, scaled by sqrt(head_dim). Use "
                "score_from='logits' or score_scale='head_dim'."
            )
        self.score_layers = score_layers
        self.score_from = score_from
        self.score_scale = score_scale

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        return resolve_score_layers(self.score_layers, num_layers)

    def call(self, attention_maps: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
        if not isinstance(attention_maps, (list, tuple)):
            attention_maps = [attention_maps]
        total = attention_maps[0]
        for attention in attention_maps[1:]:
            total = total + attention
        total = ops.cast(total, "float32")
        if self.score_from == "logits":
            total = total / float(len(attention_maps))
        return {"scores": ops.softmax(total, axis=-1), "attention_sum": total}

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "score_layers": self.score_layers,
                "score_from": self.score_from,
                "score_scale": self.score_scale,
            }
        )
        return config
