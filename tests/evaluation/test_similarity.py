"""The 12 ASLAN measures checked by hand, the non-negative transform, and the 10-fold protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest

from p3d.evaluation.similarity import (
    KL_EPS,
    MEASURE_NAMES,
    aslan_evaluate,
    fold_assignment,
    pair_vectors,
    similarity_measures,
)

X1 = np.array([1.0, 0.0, 2.0])
X2 = np.array([2.0, 1.0, 0.0])
# normalised: n1 = [1/3, 0, 2/3], n2 = [2/3, 1/3, 0]
EXPECTED = {
    "dot": 2.0,  # 1*2 + 0 + 0
    "sqrt_dot": math.sqrt(2),
    "sqrt_sqrt_dot": math.sqrt(math.sqrt(2)),  # sqrt(1)*sqrt(2)
    "harmonic": math.sqrt(2 / 3),  # 1*2/(1+2); the other elements have a zero product
    "cosine": 2 / 5,  # |x1| = |x2| = sqrt(5)
    "chi2": math.sqrt(1 / 3 + 1 / 1 + 4 / 2),
    "l1": 4.0,
    "hellinger": math.sqrt((1 - math.sqrt(2)) ** 2 + 1 + 2),
    "l2_norm": math.sqrt((1 / 3) ** 2 + (1 / 3) ** 2 + (2 / 3) ** 2),
    "sqrt_max_norm": math.sqrt(2 / 3) / 1 + 1 + 1,  # sqrt(max)/sqrt(sum) per element
    "intersection_norm": 1 / 3,  # min(1/3, 2/3) + 0 + 0, sums are 1
}


@pytest.mark.parametrize("name", [n for n in MEASURE_NAMES if n != "sym_kl_norm"])
def test_measure_by_hand(name):
    m = similarity_measures(X1, X2)
    assert m.shape == (12,)
    assert m[MEASURE_NAMES.index(name)] == pytest.approx(EXPECTED[name], rel=1e-9)


def test_symmetric_kl_by_hand():
    a, b = np.array([1.0, 1.0]), np.array([1.0, 3.0])  # normalised: [.5, .5], [.25, .75]
    kl = 0.5 * (0.5 * math.log(2) + 0.5 * math.log(2 / 3) + 0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert similarity_measures(a, b)[MEASURE_NAMES.index("sym_kl_norm")] == pytest.approx(kl, rel=1e-6)
    # a zero against a non-zero element: large but finite (epsilon smoothing)
    v = similarity_measures(X1, X2)[MEASURE_NAMES.index("sym_kl_norm")]
    assert np.isfinite(v) and v > 0.5 * (1 / 3) * math.log((1 / 3) / KL_EPS)


def test_identical_and_zero_vectors():
    m = similarity_measures(X1, X1)
    i = MEASURE_NAMES.index
    assert m[i("cosine")] == pytest.approx(1) and m[i("l1")] == 0 and m[i("sym_kl_norm")] == pytest.approx(0)
    assert m[i("intersection_norm")] == pytest.approx(1)
    z = similarity_measures(np.zeros(3), X2)
    assert np.isfinite(z).all() and z[i("cosine")] == 0


def test_negative_values_use_the_split_transform():
    a, b = np.array([1.0, -2.0, 0.5]), np.array([-1.0, 1.0, 0.5])
    m = similarity_measures(a, b)
    split = lambda x: np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)])  # noqa: E731
    np.testing.assert_allclose(m, similarity_measures(split(a), split(b)))
    assert np.isfinite(m).all()
    # for non-negative vectors the split changes nothing (extra zeros contribute nothing)
    np.testing.assert_allclose(similarity_measures(X1, X2), similarity_measures(split(X1), split(X2)))


def test_pair_vectors_48d_l2_normalised():
    rng = np.random.default_rng(0)
    reps = {n: rng.random((6, d)) for n, d in (("prob", 5), ("pool5", 16), ("res5c", 16), ("res4_last", 8))}
    v = pair_vectors(reps, np.array([0, 1, 2]), np.array([3, 4, 5]))
    assert v.shape == (3, 48)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1)
    with pytest.raises(ValueError, match="equal shapes"):
        similarity_measures(np.ones(3), np.ones(4))


def test_fold_assignment():
    f = fold_assignment(20, np.full(20, -1), 10)
    assert list(np.bincount(f)) == [2] * 10 and list(f[:4]) == [0, 0, 1, 1]  # contiguous blocks
    g = fold_assignment(20, np.full(20, -1), 10, shuffle_seed=0)
    assert list(np.bincount(g)) == [2] * 10 and list(g) != list(f)
    np.testing.assert_array_equal(fold_assignment(4, np.array([3, 3, 1, 1])), [3, 3, 1, 1])


def _pairs(n_pairs: int, informative: bool, seed: int = 0):
    """Videos of 5 'actions' (class-dependent non-negative descriptors) and balanced same/not-same pairs."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(5), 12)
    protos = rng.random((5, 20)) ** 3
    F = protos[y] + 0.05 * rng.random((60, 20)) if informative else rng.random((60, 20))
    first, second, same = [], [], []
    while len(first) < n_pairs:
        i, j = rng.integers(0, 60, 2)
        s = y[i] == y[j]
        if i != j and sum(same) + s <= n_pairs // 2 and (len(first) - sum(same)) + (not s) <= n_pairs // 2:
            first.append(i), second.append(j), same.append(s)
    return {"pool5": F, "prob": F / F.sum(1, keepdims=True)}, np.array(first), np.array(second), np.array(same)


def test_aslan_protocol_known_answer_and_chance():
    reps, a, b, same = _pairs(200, informative=True)
    folds = fold_assignment(len(a), None, 10, shuffle_seed=0)
    res = aslan_evaluate(reps, a, b, same, folds, standardize=True)
    assert len(res.fold_accuracy) == 10 and res.accuracy > 0.85 and res.auc > 0.9
    assert res.accuracy_sem == pytest.approx(np.std(res.fold_accuracy, ddof=1) / np.sqrt(10))
    reps, a, b, same = _pairs(200, informative=False, seed=1)
    res = aslan_evaluate(reps, a, b, same, folds, standardize=True)
    assert 0.3 < res.accuracy < 0.7 and 0.3 < res.auc < 0.7
