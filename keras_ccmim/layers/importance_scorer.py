"""Patch importance from [CLS] attention (ccMIM step 2)."""

import keras
from keras import ops


def resolve_score_layers(score_layers, num_layers):
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

    `s = softmax_N(sum_l a_l)`, where `a_l [B, N]` is the head-averaged
    attention of the [CLS] query over the N patch keys at scoring layer `l`.
    The maps themselves come from `ViTEncoder.cls_attention`, which runs the
    encoder only up to the deepest scoring layer.

    Args:
        score_layers: `"all"` (default), `"last"`, or a list of block indices.

    Call:
        attention_maps: list of `[B, N]` tensors, one per scoring layer.
        Returns `{"scores": [B, N] (sums to 1), "attention_sum": [B, N]}`.
    """

    def __init__(self, score_layers="all", **kwargs):
        super().__init__(**kwargs)
        if isinstance(score_layers, str):
            resolve_score_layers(score_layers, 1)  # validates the name
        else:
            score_layers = [int(i) for i in score_layers]
        self.score_layers = score_layers

    def layer_indices(self, num_layers):
        return resolve_score_layers(self.score_layers, num_layers)

    def call(self, attention_maps):
        if not isinstance(attention_maps, (list, tuple)):
            attention_maps = [attention_maps]
        total = attention_maps[0]
        for attention in attention_maps[1:]:
            total = total + attention
        total = ops.cast(total, "float32")
        return {"scores": ops.softmax(total, axis=-1), "attention_sum": total}

    def get_config(self):
        config = super().get_config()
        config.update({"score_layers": self.score_layers})
        return config
