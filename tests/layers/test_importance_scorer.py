import numpy as np
import pytest

from keras_ccmim.layers import ImportanceScorer, resolve_score_layers
from keras_ccmim.models import ViTEncoder
from tests.layers.numpy_reference import block_weights, layer_norm, reference_block
from tests.testing_utils import assert_config_round_trip, tiny_encoder_config, to_numpy


def test_resolve_score_layers():
    assert resolve_score_layers("all", 4) == (0, 1, 2, 3)
    assert resolve_score_layers("last", 4) == (3,)
    assert resolve_score_layers([2, -1, 2], 4) == (2, 3)
    with pytest.raises(ValueError, match="out of range"):
        resolve_score_layers([4], 4)
    with pytest.raises(ValueError, match="'all', 'last'"):
        ImportanceScorer("first")


def test_scores_are_softmax_of_summed_maps():
    rng = np.random.RandomState(0)
    maps = [rng.dirichlet(np.ones(9), size=2).astype("float32") for _ in range(3)]
    out = ImportanceScorer("all")(maps)
    total = sum(maps)
    expected = np.exp(total) / np.exp(total).sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(out["scores"]), expected, rtol=1e-5)
    np.testing.assert_allclose(to_numpy(out["attention_sum"]), total, rtol=1e-6)
    assert_config_round_trip(ImportanceScorer([0, 2]), {"score_layers": [0, 2]})


def test_encoder_cls_attention_matches_full_pass_and_stops_early():
    encoder = ViTEncoder(**tiny_encoder_config(num_layers=3))
    images = np.random.RandomState(1).randn(2, 16, 16, 3).astype("float32")
    tokens = encoder.embed(images)
    # Reference: run every block with return_cls_attention.
    x = encoder._prepend_cls(tokens)
    reference = []
    for block in encoder.blocks:
        x, attention = block(x, return_cls_attention=True)
        reference.append(to_numpy(attention))
    maps = encoder.cls_attention(tokens, (0, 1))
    assert len(maps) == 2
    for got, want in zip(maps, reference[:2]):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-5, atol=1e-6)
        # [CLS] attends to itself too, so the patch attention sums below 1.
        assert np.all(to_numpy(got).sum(-1) < 1.0) and np.all(to_numpy(got) > 0)

    calls = []
    original = type(encoder.blocks[2]).call

    def spy(self, *args, **kwargs):
        calls.append(self.name)
        return original(self, *args, **kwargs)

    type(encoder.blocks[2]).call = spy
    try:
        encoder.cls_attention(tokens, (0,))
    finally:
        type(encoder.blocks[2]).call = original
    assert calls == [encoder.blocks[0].name], "blocks after the deepest scoring layer must not run"


def _numpy_cls_logits(encoder, tokens, score_scale="head_dim"):
    """[CLS]-query logits over the patch keys at every block, in numpy from
    the blocks' weights: `mean_h q_0 . k_j / sqrt(d)`, `j` the N patches,
    `d` the head width (`"head_dim"`) or the hidden width `D`
    (`"hidden_dim"`, the paper's Section 3.2 as written)."""
    x = to_numpy(encoder._prepend_cls(tokens)).astype("float64")
    maps = []
    for block in encoder.blocks:
        p = block_weights(block)
        b, t, d = x.shape
        heads, dh = block.num_heads, block.head_dim
        width = {"head_dim": dh, "hidden_dim": d}[score_scale]
        qkv = (layer_norm(x, p["g1"], p["b1"], 1e-6) @ p["wqkv"] + p["bqkv"]).reshape(b, t, 3, heads, dh)
        maps.append(np.einsum("bhd,bnhd->bhn", qkv[:, 0, 0], qkv[:, 1:, 1]).mean(axis=1) / np.sqrt(width))
        x, _ = reference_block(x, p, heads)
    return maps


@pytest.mark.parametrize(
    "score_layers,score_scale",
    [("all", "head_dim"), ("last", "head_dim"), ([0, 2], "head_dim"),
     ("all", "hidden_dim"), ([0, 2], "hidden_dim")],
)
def test_logit_score_matches_numpy_from_the_block_weights(score_layers, score_scale):
    # 4 heads, so the two scales differ by a factor 2 in the logits.
    encoder = ViTEncoder(**tiny_encoder_config(num_layers=3, num_heads=4))
    images = np.random.RandomState(2).randn(2, 16, 16, 3).astype("float32")
    tokens = encoder.embed(images)
    reference = _numpy_cls_logits(encoder, tokens, score_scale)
    scorer = ImportanceScorer(score_layers, score_from="logits", score_scale=score_scale)
    indices = scorer.layer_indices(3)
    out = scorer(encoder.cls_attention(tokens, indices, kind="logits", scale=score_scale))
    mean_logits = np.mean([reference[i] for i in indices], axis=0)
    expected = np.exp(mean_logits - mean_logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(out["scores"]), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(to_numpy(out["attention_sum"]), mean_logits, rtol=1e-4, atol=1e-5)
    # The [CLS] key is excluded: the score is a distribution over N patches.
    np.testing.assert_allclose(to_numpy(out["scores"]).sum(-1), 1.0, rtol=1e-5)
    assert_config_round_trip(
        scorer, {"score_layers": score_layers, "score_from": "logits", "score_scale": score_scale}
    )


def test_score_from_and_score_scale_are_validated():
    with pytest.raises(ValueError, match="score_from"):
        ImportanceScorer("all", score_from="values")
    with pytest.raises(ValueError, match="Unknown score_scale 'model_dim'; choose one of head_dim, hidden_dim"):
        ImportanceScorer("all", score_from="logits", score_scale="model_dim")
    with pytest.raises(ValueError, match="applies to the logit score only"):
        ImportanceScorer("all", score_scale="hidden_dim")
    assert ImportanceScorer("all").score_scale == "head_dim"
