"""Pre-norm ViT block whose attention can also return the [CLS] attention row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

import keras
from keras import ops

from keras_ccmim.layers.drop_path import DropPath
from keras_ccmim.layers.layer_norm import LayerNormalization
from keras_ccmim.layers.layer_scale import LayerScale
from keras_ccmim.type_aliases import Tensor

# What divides the [CLS] query's logits of the logit score
# (`cls_attention_scale`): the square root of the head width `Dh`, as the
# attention itself, or of the hidden width `D`, as the paper's Section 3.2
# writes it.
ClsLogitScale = Literal["head_dim", "hidden_dim"]
CLS_LOGIT_SCALES = get_args(ClsLogitScale)
# What the [CLS] attention row holds (`cls_attention_kind`).
ClsAttentionKind = Literal["probabilities", "logits"]


@keras.saving.register_keras_serializable(package="keras_ccmim")
class TransformerBlock(keras.layers.Layer):
    """`x + DropPath(LS(MHSA(LN(x))))`, then `x + DropPath(LS(MLP(LN(x))))`.

    Self-attention uses the fused `keras.ops.dot_product_attention`. With
    `return_cls_attention=True` the block also returns the softmax attention
    of the first token ([CLS]) over all other tokens, averaged over heads,
    computed from that one query row (`q_cls . K^T`) so the full attention
    matrix is never materialised.

    Args:
        hidden_dim: int `D`.
        num_heads: int, must divide `D`.
        mlp_ratio: MLP hidden width as a multiple of `D`.
        qkv_bias: whether the query/key/value projection has a bias.
        drop_path_rate: stochastic depth rate of both residual branches.
        layer_scale_init_value: if set, LayerScale on both branches with this
            initial value; `None` disables it.
        layer_norm_epsilon: epsilon of both LayerNorms.
        seed: optional seed for DropPath.

    Call:
        x: `[B, T, D]` with token 0 the [CLS] token.
        Returns `[B, T, D]`, or `([B, T, D], [B, T-1])` with
        `return_cls_attention=True`; with `cls_attention_only=True` only the
        `[B, T-1]` attention (the rest of the block is skipped).
        `cls_attention_kind`: `"probabilities"` (default) or `"logits"`, the
        head-averaged scaled logits of the patch keys;
        `cls_attention_scale`: `"head_dim"` (default; logits divided by
        `sqrt(Dh)`) or `"hidden_dim"` (by `sqrt(D)`), for the logits only.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        layer_scale_init_value: float | None = None,
        layer_norm_epsilon: float = 1e-6,
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        hidden_dim, num_heads = int(hidden_dim), int(num_heads)
        if hidden_dim % num_heads:
            raise ValueError(
                f"hidden_dim ({hidden_dim}) must be divisible by num_heads ({num_heads})."
            )
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.head_dim = hidden_dim // num_heads
        self.mlp_ratio = float(mlp_ratio)
        self.qkv_bias = bool(qkv_bias)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_scale_init_value = (
            None if layer_scale_init_value is None else float(layer_scale_init_value)
        )
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.seed = seed

        dense = dict(kernel_initializer="glorot_uniform", dtype=self.dtype_policy)
        self.norm1 = LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm1"
        )
        self.qkv = keras.layers.Dense(3 * hidden_dim, use_bias=self.qkv_bias, name="qkv", **dense)
        self.proj = keras.layers.Dense(hidden_dim, name="proj", **dense)
        self.norm2 = LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="norm2"
        )
        self.fc1 = keras.layers.Dense(
            int(hidden_dim * self.mlp_ratio),
            activation="gelu",
            name="fc1",
            **dense,
        )
        self.fc2 = keras.layers.Dense(hidden_dim, name="fc2", **dense)
        self.drop_path = DropPath(self.drop_path_rate, seed=seed, dtype=self.dtype_policy, name="drop_path")
        if self.layer_scale_init_value is not None:
            self.ls1 = LayerScale(self.layer_scale_init_value, dtype=self.dtype_policy, name="ls1")
            self.ls2 = LayerScale(self.layer_scale_init_value, dtype=self.dtype_policy, name="ls2")
        else:
            self.ls1 = self.ls2 = None

    def build(self, input_shape: Sequence[int | None]) -> None:
        d = self.hidden_dim
        self.norm1.build(input_shape)
        self.qkv.build((None, None, d))
        self.proj.build((None, None, d))
        self.norm2.build(input_shape)
        self.fc1.build((None, None, d))
        self.fc2.build((None, None, int(d * self.mlp_ratio)))
        if self.ls1 is not None:
            self.ls1.build((None, None, d))
            self.ls2.build((None, None, d))

    def _split_heads(self, x):
        t = ops.shape(x)[1]
        # Split before the reshape: the gradient is then a concatenation
        # instead of three zero-padded slices summed (faster on JAX on CPU;
        # see docs/performance/).
        q, k, v = ops.split(self.qkv(x), 3, axis=-1)
        shape = (-1, t, self.num_heads, self.head_dim)
        return ops.reshape(q, shape), ops.reshape(k, shape), ops.reshape(v, shape)

    def _cls_attention(self, q, k, kind="probabilities", scale="head_dim"):
        """The [CLS] query's attention over the patch keys, head-averaged.

        `"probabilities"`: the softmax over all T keys ([CLS] included), then
        the N patch columns, with the attention's own `1 / sqrt(Dh)`.
        `"logits"`: the scaled logits `q_0 . k_j / sqrt(d)` of the N patch
        keys (no softmax; the [CLS] key excluded), `d` the head width `Dh`
        (`scale="head_dim"`) or the hidden width `D` (`"hidden_dim"`).
        """
        if kind not in ("probabilities", "logits"):
            raise ValueError(
                f"Unknown [CLS] attention kind {kind!r}; use 'probabilities' or 'logits'."
            )
        if scale not in CLS_LOGIT_SCALES:
            raise ValueError(
                f"Unknown [CLS] logit scale {scale!r}; use one of {', '.join(CLS_LOGIT_SCALES)}."
            )
        q_cls = ops.cast(q[:, 0], "float32")  # [B, H, Dh]
        logits = ops.einsum("bhd,bthd->bht", q_cls, ops.cast(k, "float32"))
        if kind == "logits":
            width = self.head_dim if scale == "head_dim" else self.hidden_dim
            return ops.mean(logits[:, :, 1:] * (width**-0.5), axis=1)
        logits = logits * (self.head_dim**-0.5)
        return ops.mean(ops.softmax(logits, axis=-1), axis=1)[:, 1:]

    def call(
        self,
        x: Tensor,
        training: bool | None = None,
        return_cls_attention: bool = False,
        cls_attention_only: bool = False,
        cls_attention_kind: ClsAttentionKind = "probabilities",
        cls_attention_scale: ClsLogitScale = "head_dim",
    ) -> Tensor | tuple[Tensor, Tensor]:
        q, k, v = self._split_heads(self.norm1(x))
        if cls_attention_only:
            return self._cls_attention(q, k, cls_attention_kind, cls_attention_scale)
        t = ops.shape(x)[1]
        attn = ops.dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        branch = self.proj(ops.reshape(attn, (-1, t, self.hidden_dim)))
        if self.ls1 is not None:
            branch = self.ls1(branch)
        x = x + self.drop_path(branch, training=training)
        branch = self.fc2(self.fc1(self.norm2(x)))
        if self.ls2 is not None:
            branch = self.ls2(branch)
        x = x + self.drop_path(branch, training=training)
        if return_cls_attention:
            return x, self._cls_attention(q, k, cls_attention_kind, cls_attention_scale)
        return x

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> Sequence[int | None]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio,
                "qkv_bias": self.qkv_bias,
                "drop_path_rate": self.drop_path_rate,
                "layer_scale_init_value": self.layer_scale_init_value,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "seed": self.seed,
            }
        )
        return config
