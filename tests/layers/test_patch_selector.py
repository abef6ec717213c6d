import itertools

import numpy as np
import pytest
from keras import ops

from keras_ccmim.layers import MASKING_STRATEGIES, PatchSelector, num_masked_patches
from tests.testing_utils import assert_config_round_trip, to_numpy


def run_selector(selector, batch, scores=None):
    tokens = ops.zeros((batch, selector.num_patches, 1))
    attention_sum = None
    if scores is not None:
        scores = np.broadcast_to(scores, (batch, selector.num_patches)).astype("float32")
        attention_sum = np.log(scores)
    out = selector(tokens, scores=scores, attention_sum=attention_sum)
    return {k: to_numpy(v) for k, v in out.items()}


def check_partition(out, n, k):
    b = out["ids_keep"].shape[0]
    assert out["ids_keep"].shape == (b, n - k)
    assert out["ids_mask"].shape == (b, k)
    assert out["ids_restore"].shape == (b, n)
    assert out["mask"].shape == (b, n)
    for row in range(b):
        keep, masked = set(out["ids_keep"][row]), set(out["ids_mask"][row])
        assert len(keep) == n - k and len(masked) == k
        assert not keep & masked
        assert keep | masked == set(range(n))
        shuffle = np.concatenate([out["ids_keep"][row], out["ids_mask"][row]])
        np.testing.assert_array_equal(shuffle[out["ids_restore"][row]], np.arange(n))
        expected_mask = np.zeros(n)
        expected_mask[out["ids_mask"][row]] = 1.0
        np.testing.assert_array_equal(out["mask"][row], expected_mask)


@pytest.mark.parametrize(
    "masking,sampler", [("importance_sampling", "gumbel"), ("importance_sampling", "uniform_noise"),
                        ("importance", "gumbel"), ("random", "gumbel"), ("block", "gumbel")]
)
@pytest.mark.parametrize("grid,ratio", [((4, 4), 0.75), ((6, 5), 0.5), ((14, 14), 0.75)])
def test_every_strategy_partitions_the_patches(masking, sampler, grid, ratio):
    selector = PatchSelector(grid, mask_ratio=ratio, masking=masking, sampler=sampler, seed=11)
    n = grid[0] * grid[1]
    k = num_masked_patches(n, ratio)
    scores = np.random.RandomState(0).dirichlet(np.ones(n))
    check_partition(run_selector(selector, 6, scores), n, k)


def plackett_luce_inclusion(p, k):
    """Exact inclusion probabilities of sampling k of len(p) without replacement
    with probabilities proportional to p (successive draws)."""
    n = len(p)
    inclusion = np.zeros(n)
    for order in itertools.permutations(range(n), k):
        prob, left = 1.0, 1.0
        for i in order:
            prob *= p[i] / left
            left -= p[i]
        inclusion[list(order)] += prob
    return inclusion


def test_gumbel_sampling_matches_sampling_without_replacement():
    scores = np.array([0.02, 0.05, 0.08, 0.1, 0.15, 0.25, 0.35], "float64")
    scores /= scores.sum()
    selector = PatchSelector((1, 7), mask_ratio=3 / 7, masking="importance_sampling", seed=3)
    out = run_selector(selector, 20000, scores)
    frequency = out["mask"].mean(axis=0)
    expected = plackett_luce_inclusion(scores, 3)
    np.testing.assert_allclose(frequency, expected, atol=0.015)
    assert np.all(np.diff(frequency) > 0), "inclusion must rise with the score"


def test_temperature_sharpens_sampling():
    scores = np.array([0.05, 0.1, 0.15, 0.2, 0.5])
    cold = PatchSelector((1, 5), mask_ratio=0.4, sampling_temperature=0.25, seed=1)
    warm = PatchSelector((1, 5), mask_ratio=0.4, sampling_temperature=4.0, seed=1)
    f_cold = run_selector(cold, 5000, scores)["mask"].mean(0)
    f_warm = run_selector(warm, 5000, scores)["mask"].mean(0)
    np.testing.assert_allclose(f_cold, plackett_luce_inclusion(scores**4 / (scores**4).sum(), 2), atol=0.03)
    assert f_cold[-1] > f_warm[-1] and f_cold[0] < f_warm[0]


def test_uniform_noise_sampler_prefers_high_scores():
    scores = np.linspace(1, 3, 8)
    scores /= scores.sum()
    selector = PatchSelector((2, 4), mask_ratio=0.5, sampler="uniform_noise", seed=2)
    frequency = run_selector(selector, 4000, scores)["mask"].mean(0)
    assert frequency[-1] > frequency[0] + 0.2
    assert np.corrcoef(frequency, scores)[0, 1] > 0.9


@pytest.mark.parametrize("sampler", ["gumbel", "uniform_noise"])
def test_flat_scores_give_uniform_inclusion(sampler):
    selector = PatchSelector((4, 4), mask_ratio=0.75, sampler=sampler, seed=4)
    frequency = run_selector(selector, 4000, np.full(16, 1 / 16))["mask"].mean(0)
    np.testing.assert_allclose(frequency, 0.75, atol=0.035)


def test_random_masking_is_uniform():
    selector = PatchSelector((4, 4), mask_ratio=0.25, masking="random", seed=4)
    frequency = run_selector(selector, 4000)["mask"].mean(0)
    np.testing.assert_allclose(frequency, 0.25, atol=0.035)


def test_importance_is_deterministic_top_k():
    scores = np.random.RandomState(5).dirichlet(np.ones(16), size=3).astype("float32")
    selector = PatchSelector(4, mask_ratio=0.25, masking="importance", seed=1)
    tokens = ops.zeros((3, 16, 1))
    first = to_numpy(selector(tokens, scores=scores)["ids_mask"])
    second = to_numpy(selector(tokens, scores=scores)["ids_mask"])
    np.testing.assert_array_equal(np.sort(first, 1), np.sort(second, 1))
    np.testing.assert_array_equal(np.sort(first, 1), np.sort(np.argsort(-scores, 1)[:, :4], 1))


def masked_neighbour_fraction(mask, rows, cols):
    m = mask.reshape(-1, rows, cols)
    same = (m[:, 1:, :] == m[:, :-1, :]).mean() + (m[:, :, 1:] == m[:, :, :-1]).mean()
    return same / 2


def test_block_masking_is_blocky():
    block = PatchSelector(14, mask_ratio=0.4, masking="block", seed=6)
    rand = PatchSelector(14, mask_ratio=0.4, masking="random", seed=6)
    block_mask = run_selector(block, 200)["mask"]
    rand_mask = run_selector(rand, 200)["mask"]
    assert masked_neighbour_fraction(block_mask, 14, 14) > masked_neighbour_fraction(rand_mask, 14, 14) + 0.15


def test_seeded_layers_repeat_and_draws_differ():
    a = PatchSelector(4, masking="random", seed=9)
    b = PatchSelector(4, masking="random", seed=9)
    ma, mb = run_selector(a, 4)["mask"], run_selector(b, 4)["mask"]
    np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(ma, run_selector(a, 4)["mask"])


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="mask_ratio"):
        PatchSelector(4, mask_ratio=1.0)
    with pytest.raises(ValueError, match="Unknown masking"):
        PatchSelector(4, masking="greedy")
    with pytest.raises(ValueError, match="Unknown sampler"):
        PatchSelector(4, sampler="softmax")
    with pytest.raises(ValueError, match="temperature"):
        PatchSelector(4, sampling_temperature=0)
    with pytest.raises(ValueError, match="needs importance scores"):
        PatchSelector(4)(ops.zeros((1, 16, 1)))


def test_config_round_trip():
    args = dict(grid_size=[3, 4], mask_ratio=0.5, masking="block", sampler="uniform_noise", sampling_temperature=2.0, seed=3)
    assert_config_round_trip(PatchSelector(**args), args)
    assert set(MASKING_STRATEGIES) == {"importance_sampling", "importance", "random", "block"}


def test_temperature_schedule_anneals_by_half_cosine_in_training_only():
    selector = PatchSelector(4, sampling_temperature=0.1, sampling_temperature_start=1.0, sampling_temperature_steps=4, seed=0)
    scores = np.full((16,), 1 / 16)
    expected = [0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t / 4, 1))) for t in range(7)]
    got = []
    for _ in range(7):
        got.append(float(to_numpy(selector.current_temperature())))
        tokens = ops.zeros((2, 16, 1))
        selector(tokens, scores=np.broadcast_to(scores, (2, 16)).astype("float32"), training=True)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got[0] == pytest.approx(1.0) and got[4] == pytest.approx(0.1) and got[6] == pytest.approx(0.1)
    step = float(to_numpy(selector.temperature_step))
    run_selector(selector, 2, scores)  # inference: the position does not move
    assert float(to_numpy(selector.temperature_step)) == step == 7.0
    # A constant temperature has no variable (old weight files stay loadable).
    assert PatchSelector(4).weights == []


def test_schedule_position_travels_with_the_weights(tmp_path):
    import keras

    make = lambda: PatchSelector(4, sampling_temperature=0.2, sampling_temperature_start=1.0, sampling_temperature_steps=10)  # noqa: E731
    selector = make()
    tokens, scores = ops.zeros((1, 16, 1)), np.full((1, 16), 1 / 16, "float32")
    for _ in range(3):
        selector(tokens, scores=scores, training=True)
    model = keras.Sequential([keras.Input((16, 1)), keras.layers.Lambda(lambda x: x)])
    model.selector = selector
    path = str(tmp_path / "s.weights.h5")
    model.save_weights(path)
    other = keras.Sequential([keras.Input((16, 1)), keras.layers.Lambda(lambda x: x)])
    other.selector = make()
    other.selector.build()
    other.load_weights(path)
    assert float(to_numpy(other.selector.temperature_step)) == 3.0
    assert float(to_numpy(other.selector.current_temperature())) == pytest.approx(
        float(to_numpy(selector.current_temperature())))


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="sampling_temperature_steps > 0"):
        PatchSelector(4, sampling_temperature_start=1.0)
    with pytest.raises(ValueError, match="sampling_temperature_start must be a positive"):
        PatchSelector(4, sampling_temperature_start=0.0, sampling_temperature_steps=3)
    args = dict(grid_size=[4, 4], sampling_temperature=0.1, sampling_temperature_start=1.0, sampling_temperature_steps=5)
    assert_config_round_trip(PatchSelector(**args), args)
