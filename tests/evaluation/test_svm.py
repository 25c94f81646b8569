"""Linear-SVM protocols and metrics: known answers, chance level, hand-computed AP, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from p3d.evaluation.svm import (
    Split,
    SVMConfig,
    average_precision,
    kfold_splits,
    leave_one_group_out_splits,
    mean_average_precision,
    pca_dimension_study,
    run_protocol,
    topk_accuracy,
)


def clusters(n_per: int = 20, k: int = 4, d: int = 32, sep: float = 3.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + rng.normal(size=(len(y), d)), y


def test_separable_clusters_are_classified():
    X, y = clusters()
    res = run_protocol(X, y, kfold_splits(y, 5), pool=True)
    assert res.pooled["top1"] >= 0.95 and res.pooled["mAP"] >= 0.95
    assert len(res.per_split) == 5


def test_features_without_class_information_give_chance():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 40)
    X = rng.normal(size=(160, 16))  # independent of y
    res = run_protocol(X, y, kfold_splits(y, 5, seed=1), pool=True)
    assert 0.1 <= res.pooled["top1"] <= 0.42  # chance is 0.25
    Xs, ys = clusters(40, 4, 16, seed=1)
    assert run_protocol(Xs, ys, kfold_splits(ys, 5, seed=1), pool=True).pooled["top1"] > res.pooled["top1"] + 0.4


def test_leave_one_video_out_and_groups():
    X, y = clusters(6, 3, 8, sep=4.0)
    splits = leave_one_group_out_splits(range(len(y)))
    assert len(splits) == 18 and all(len(s.test) == 1 for s in splits)
    res = run_protocol(X, y, splits, pool=True)
    assert res.pooled["top1"] == pytest.approx(res.mean["top1"])  # LOO: pooled accuracy = mean of 0/1
    g = leave_one_group_out_splits(["a", "b", "a", "c"])
    assert [s.name for s in g] == ["a", "b", "c"] and list(g[0].test) == [0, 2]


def test_split_mean_and_standard_error():
    X, y = clusters(10, 2, 8)
    s = [Split("s1", np.arange(0, 20, 2), np.arange(1, 20, 2)), Split("s2", np.arange(1, 20, 2), np.arange(0, 20, 2))]
    res = run_protocol(X, y, s)
    assert res.pooled is None and set(res.mean) >= {"top1", "mAP"}
    assert res.mean["top1"] == pytest.approx(np.mean([m["top1"] for m in res.per_split]))


def test_average_precision_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    # ranks 2, 4, 5 positive: precisions at positives 1/2, 2/4, 3/5
    pos = np.array([0, 1, 0, 1, 1], bool)
    assert average_precision(scores, pos, interpolated=False) == pytest.approx((1 / 2 + 2 / 4 + 3 / 5) / 3)
    # interpolated (ActivityNet): max precision at recall >= r is 3/5 for every recall step -> 0.6
    assert average_precision(scores, pos) == pytest.approx(0.6)
    # order of the input does not matter, only the scores
    perm = np.array([3, 0, 4, 1, 2])
    assert average_precision(scores[perm], pos[perm]) == pytest.approx(0.6)
    assert np.isnan(average_precision(scores, np.zeros(5, bool)))


def test_mean_average_precision_by_hand():
    scores = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    y = np.array([0, 1, 0, 1])
    # class 0 ranking by col 0: v0(+), v1(-), v2(+), v3(-) -> AP = (1 + 2/3)/2 ; interpolated: same
    # class 1 ranking by col 1: v3(+), v2(-), v1(+), v0(-) -> AP = (1 + 2/3)/2
    assert mean_average_precision(scores, y) == pytest.approx(5 / 6)
    # a class with no positives is left out: a third column changes nothing
    s3 = np.concatenate([scores, np.zeros((4, 1))], axis=1)
    assert mean_average_precision(s3, y) == pytest.approx(5 / 6)
    # multi-hot labels (untrimmed videos with two activities)
    Y = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    assert mean_average_precision(scores, Y, interpolated=False) == pytest.approx(
        np.mean([(1 + 2 / 3) / 2, (1 + 1 + 1) / 3])
    )


def test_topk_accuracy():
    scores = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.3], [0.9, 0.05, 0.05]])
    y = np.array([2, 1, -1])
    assert topk_accuracy(scores, y, 1) == 0.0
    assert topk_accuracy(scores, y, 2) == pytest.approx(2 / 3)  # row 1: tie, stable order puts column 1 second
    assert topk_accuracy(scores, y, 3) == pytest.approx(2 / 3)  # -1 (class unseen in training) is never right


def test_pca_option_and_study():
    X, y = clusters(15, 3, 40)
    splits = kfold_splits(y, 3)
    r = run_protocol(X, y, splits, SVMConfig(pca=5), pool=True)
    assert r.pooled["top1"] > 0.9
    with pytest.warns(UserWarning, match="PCA dimension 500 skipped"):
        study = pca_dimension_study(X, y, splits, [500, 20, 2], pool=True)
    assert [d for d, _ in study] == [20, 2]
    with pytest.raises(ValueError, match="PCA to 100 dimensions .* 30 training videos of dimension 40"):
        run_protocol(X, y, splits, SVMConfig(pca=100))


def test_bad_inputs():
    X, y = clusters(5, 2, 4)
    with pytest.raises(ValueError, match=r"features must be \(N, D\) with labels \(N,\)"):
        run_protocol(X, y[:-1], kfold_splits(y, 2))
    y2 = y.copy()
    y2[0] = -1
    with pytest.raises(ValueError, match="have no label"):
        run_protocol(X, y2, kfold_splits(y, 2))
    with pytest.raises(ValueError, match="2 <= k <= number of videos"):
        kfold_splits(y, 50)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_protocol(Xn, y, kfold_splits(y, 2))
