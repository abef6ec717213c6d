"""Weighted k-NN against a brute-force reference."""

import numpy as np
import pytest

from keras_ccmim.evaluation import knn_classify, knn_scores, top_k_accuracy


def brute_force_knn_scores(train, train_labels, queries, num_classes, k, temperature):
    """One query at a time, full sort, explicit loops."""
    scores = np.zeros((len(queries), num_classes))
    for q, query in enumerate(queries):
        similarities = []
        for t, point in enumerate(train):
            cos = float(query @ point) / (np.linalg.norm(query) * np.linalg.norm(point))
            similarities.append((cos, t))
        similarities.sort(key=lambda pair: -pair[0])
        for cos, t in similarities[:k]:
            scores[q, train_labels[t]] += np.exp(cos / temperature)
    return scores


def brute_force_top_k(scores, labels, k):
    hits = 0
    for row, label in zip(scores, labels):
        ranked = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in ranked[:k]
    return hits / len(labels)


@pytest.mark.parametrize("k,temperature,batch_size", [(20, 0.07, 7), (1, 0.07, 1000), (5, 0.5, 3)])
def test_scores_match_brute_force(k, temperature, batch_size):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 6)).astype("float32")
    labels = rng.integers(0, 7, size=60)
    queries = rng.normal(size=(23, 6)).astype("float32")
    got = knn_scores(train, labels, queries, 7, k=k, temperature=temperature, batch_size=batch_size)
    want = brute_force_knn_scores(train, labels, queries, 7, k, temperature)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_accuracies_match_brute_force():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(7, 6)) * 2
    train_labels = rng.integers(0, 7, size=80)
    eval_labels = rng.integers(0, 7, size=40)
    train = centres[train_labels] + rng.normal(size=(80, 6))
    queries = centres[eval_labels] + rng.normal(size=(40, 6))
    result = knn_classify(train, train_labels, queries, eval_labels, num_classes=7)
    scores = brute_force_knn_scores(train, train_labels, queries, 7, 20, 0.07)
    assert result["top1"] == pytest.approx(100 * brute_force_top_k(scores, eval_labels, 1))
    assert result["top5"] == pytest.approx(100 * brute_force_top_k(scores, eval_labels, 5))
    assert result["top1"] > 50  # the clusters are separable enough
    assert result["num_train"] == 80 and result["num_eval"] == 40 and result["num_classes"] == 7


def test_top_k_breaks_ties_towards_lower_class():
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]])
    assert top_k_accuracy(scores, np.array([0, 1]), 1) == 1.0
    assert top_k_accuracy(scores, np.array([1, 2]), 1) == 0.0
    assert top_k_accuracy(scores, np.array([2, 0]), 5) == 1.0  # k > C: every row


def test_bad_inputs_raise_clear_errors():
    train = np.ones((4, 3))
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="k must be between 1 and"):
        knn_scores(train, labels, train, 2, k=5)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        knn_scores(train, np.array([0, 1, 2, -1]), train, 2, k=2)
    with pytest.raises(ValueError, match="query features must be"):
        knn_scores(train, labels, np.ones((2, 4)), 2, k=2)
    with pytest.raises(ValueError, match="temperature must be positive"):
        knn_scores(train, labels, train, 2, k=2, temperature=0)
    with pytest.raises(ValueError, match="all -1"):
        knn_classify(train, -np.ones(4, int), train, -np.ones(4, int))
