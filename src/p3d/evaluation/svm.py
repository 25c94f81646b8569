"""Linear-SVM protocols on video representations (paper, Sec. 5: "P3D ResNet as a generic representation").

The paper evaluates pool5 video descriptors (clip descriptors averaged over a video) with a linear SVM on
UCF101 (three train/test splits, mean accuracy), ActivityNet (untrimmed classification, mean average precision),
ASLAN (see :mod:`p3d.evaluation.similarity`), YUPENN and Dynamic Scene (leave-one-video-out).  This module
provides the classifier, the split generators and the metrics; it knows nothing about files.

Classifier: ``x -> x / ||x||_2`` (optional) ``-> PCA(d)`` (optional, fitted on the training videos only)
``-> LinearSVC(C)`` one-vs-rest.  The L2 normalisation is the usual practice for averaged CNN descriptors and
makes the default ``C = 1`` a sensible value across layers of very different scales.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from p3d.engine.metrics import multi_hot, topk_hits


@dataclass(frozen=True)
class SVMConfig:
    """Classifier settings. ``pca``: keep this many principal components (None: no PCA)."""

    C: float = 1.0
    normalize: str = "l2"  # "l2", "standard" (zero mean, unit variance on the training set) or "none"
    pca: int | None = None
    max_iter: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.normalize not in ("l2", "standard", "none"):
            raise ValueError(f"normalize must be 'l2', 'standard' or 'none', got {self.normalize!r}")
        if self.C <= 0:
            raise ValueError(f"C must be positive, got {self.C}")
        if self.pca is not None and self.pca < 1:
            raise ValueError(f"pca must be a positive number of dimensions, got {self.pca}")


def make_classifier(cfg: SVMConfig, n_train: int, dim: int):  # -> sklearn Pipeline
    """The sklearn pipeline for ``cfg``; checks the PCA size against the training set (``n_train x dim``)."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler
    from sklearn.svm import LinearSVC

    steps = []
    if cfg.normalize == "l2":
        steps.append(Normalizer(norm="l2"))
    elif cfg.normalize == "standard":
        steps.append(StandardScaler())
    if cfg.pca is not None:
        limit = min(n_train, dim)
        if cfg.pca > limit:
            raise ValueError(
                f"PCA to {cfg.pca} dimensions needs at least that many training videos and feature "
                f"dimensions; this split has {n_train} training videos of dimension {dim} (max {limit})"
            )
        steps.append(PCA(n_components=cfg.pca, random_state=cfg.seed))
    steps.append(LinearSVC(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed, dual="auto"))
    return make_pipeline(*steps)


# ----------------------------------------------------------------------------------------------------- metrics


def topk_accuracy(scores: np.ndarray, y: np.ndarray, k: int = 1) -> float:
    """Fraction of rows with a true class among the ``k`` highest scores.

    Args:
        scores: ``(N, K)`` class scores.  y: ``(N,)`` column index of the true class, ``-1`` if the class is not
            among the columns (then the row counts as wrong), or ``(N, K)`` multi-hot: a row is a hit when *any*
            of its true classes is in its top ``k`` (as ``p3d test`` counts multi-label videos).
    Ties are broken by column order (stable sort), so a constant score row is not counted as correct for free.
    """
    if len(np.asarray(y)) == 0:
        raise ValueError("no samples to score")
    return float(np.mean(topk_hits(scores, y, k)))


def average_precision(scores: np.ndarray, positive: np.ndarray, interpolated: bool = True) -> float:
    """Average precision of one class over videos ranked by decreasing score.

    ``interpolated=True`` is the ActivityNet classification metric (``compute_average_precision_classification``
    of the challenge's evaluation code, VOC2010+ style): precision is made monotone (each value replaced by the
    maximum precision at any higher recall) and integrated over recall.  ``interpolated=False`` is the plain mean
    of the precision at the rank of each positive.  Ties keep input order (stable sort).

    Args:
        scores: ``(N,)``.  positive: ``(N,)`` bool.  Returns NaN if there are no positives.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.shape != positive.shape or scores.ndim != 1:
        raise ValueError(f"scores and positive must be equal-length 1-D arrays, got {scores.shape}, {positive.shape}")
    npos = int(positive.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp = positive[order].astype(np.float64)
    ctp = np.cumsum(tp)
    prec = ctp / np.arange(1, len(tp) + 1)
    if not interpolated:
        return float(np.sum(prec * tp) / npos)
    rec = ctp / npos
    mprec = np.concatenate([[0.0], prec, [0.0]])
    mrec = np.concatenate([[0.0], rec, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def mean_average_precision(scores: np.ndarray, y: np.ndarray, interpolated: bool = True) -> float:
    """Mean over classes of :func:`average_precision` (ActivityNet untrimmed video classification).

    Args:
        scores: ``(N, K)``.  y: ``(N,)`` true column index (``-1``: none of the columns) or ``(N, K)`` multi-hot.
    Classes without any positive video are left out of the mean (their AP is undefined).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, K), got {scores.shape}")
    y = np.asarray(y)
    if y.ndim == 1:
        if y.shape[0] != scores.shape[0]:
            raise ValueError(f"y has {y.shape[0]} rows, scores {scores.shape[0]}")
        onehot = y[:, None] == np.arange(scores.shape[1])[None, :]
    elif y.shape == scores.shape:
        onehot = y.astype(bool)
    else:
        raise ValueError(f"y must be (N,) or (N, K) like scores {scores.shape}, got {y.shape}")
    aps = [average_precision(scores[:, c], onehot[:, c], interpolated) for c in range(scores.shape[1])]
    aps = [a for a in aps if not np.isnan(a)]
    if not aps:
        raise ValueError("no class has a positive video; mean AP is undefined")
    return float(np.mean(aps))


def classification_metrics(scores: np.ndarray, y: np.ndarray, topk: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"top1": ..., "top5": ..., "mAP": ...}`` for ``(N, K)`` scores and ``(N,)`` true column indices or
    ``(N, K)`` multi-hot true classes."""
    out = {f"top{k}": topk_accuracy(scores, y, k) for k in sorted(set(topk) | {1})}
    out["mAP"] = mean_average_precision(scores, y)
    return out


# ----------------------------------------------------------------------------------------------- protocols


@dataclass(frozen=True)
class Split:
    """One train/test partition: row indices into the feature matrix."""

    name: str
    train: np.ndarray
    test: np.ndarray


def kfold_splits(y: np.ndarray, k: int = 10, seed: int = 0, stratified: bool = True) -> list[Split]:
    """``k`` folds, stratified by class when every class has at least ``k`` videos (else plain shuffled k-fold)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    y = np.asarray(y)
    if not 2 <= k <= len(y):
        raise ValueError(f"k-fold needs 2 <= k <= number of videos ({len(y)}), got k={k}")
    _, counts = np.unique(y, return_counts=True)
    if stratified and counts.min() >= k:
        it = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        it = KFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)))
    return [Split(f"fold{i + 1}", tr, te) for i, (tr, te) in enumerate(it)]


def leave_one_group_out_splits(groups: Sequence[object]) -> list[Split]:
    """One split per distinct group; ``groups = range(N)`` is leave-one-video-out (YUPENN, Dynamic Scene)."""
    g = np.asarray([str(x) for x in groups])
    names = list(dict.fromkeys(g))
    if len(names) < 2:
        raise ValueError("leave-one-group-out needs at least two groups")
    return [Split(str(n), np.nonzero(g != n)[0], np.nonzero(g == n)[0]) for n in names]


@dataclass
class ProtocolResult:
    """Per-split metrics, their mean and standard error, and metrics of the pooled held-out predictions.

    ``pooled`` is filled when the test sets are disjoint (k-fold, leave-one-out): every video is scored once by
    a model that did not see it, and the metrics are computed on all of them together (for leave-one-video-out
    this *is* the reported accuracy).
    """

    per_split: list[dict[str, float]]
    mean: dict[str, float]
    sem: dict[str, float]
    pooled: dict[str, float] | None = None
    split_names: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """The headline numbers: pooled metrics when available, else the mean over splits."""
        return dict(self.pooled) if self.pooled is not None else dict(self.mean)


def _scores(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    d = model.decision_function(X)
    if d.ndim == 1:  # binary LinearSVC: one score, positive = classes_[1]
        d = np.stack([-d, d], axis=1)
    assert d.shape[1] == n_classes
    return d


def fit_predict(
    X: np.ndarray, y: np.ndarray, split: Split, cfg: SVMConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train on ``split.train``; returns (classes, ``(n_test, K)`` scores, ``(n_test,)`` true column or -1)."""
    Xtr, ytr = X[split.train], y[split.train]
    classes = np.unique(ytr)
    if len(classes) < 2:
        raise ValueError(f"split {split.name!r}: the training set has only {len(classes)} class(es)")
    model = make_classifier(cfg, len(Xtr), X.shape[1])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Liblinear failed to converge.*")
        model.fit(Xtr, ytr)
    scores = _scores(model, X[split.test], len(classes))
    col = {c: i for i, c in enumerate(classes)}
    ytrue = np.array([col.get(c, -1) for c in y[split.test]], dtype=np.int64)
    return classes, scores, ytrue


def _checked(
    X: np.ndarray, y: np.ndarray, splits: Sequence[Split], multi_labels: Sequence[Sequence[int]] | None
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ...]] | None]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"features must be (N, D) with labels (N,), got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    if not splits:
        raise ValueError("no splits to evaluate")
    labs = None
    if multi_labels is not None:
        if len(multi_labels) != len(y):
            raise ValueError(f"multi_labels has {len(multi_labels)} entries, expected one per video ({len(y)})")
        # the training label is always one of the true classes
        labs = [tuple(dict.fromkeys([int(y[i]), *m] if y[i] >= 0 else m)) for i, m in enumerate(multi_labels)]
    return X, y, labs


def _split_metrics(scores: np.ndarray, ytrue: np.ndarray, topk: Sequence[int], n_test: int) -> dict[str, float]:
    m = {f"top{k}": topk_accuracy(scores, ytrue, k) for k in sorted(set(topk) | {1})}
    if n_test > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m["mAP"] = mean_average_precision(scores, ytrue)
            except ValueError:
                pass
    return m


def _mean_sem(per: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean over splits and its standard error, for every metric."""
    keys = sorted(set().union(*per), key=lambda k: (k != "top1", k))
    mean, sem = {}, {}
    for k in keys:
        vals = [m[k] for m in per if k in m]
        mean[k] = float(np.mean(vals))
        sem[k] = float(np.std(vals, ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else 0.0
    return mean, sem


def run_protocol(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    cfg: SVMConfig = SVMConfig(),
    topk: Sequence[int] = (1, 5),
    pool: bool = False,
    multi_labels: Sequence[Sequence[int]] | None = None,
) -> ProtocolResult:
    """Run the linear SVM over ``splits`` of ``X`` ``(N, D)`` with labels ``y`` ``(N,)`` (-1: unknown).

    ``pool=True`` (k-fold, leave-one-out; the test sets must be disjoint) also scores all held-out predictions
    together; with ``pool=False`` (e.g. UCF101's three train/test splits) the headline is the mean over splits.
    Videos with an unknown label must not be in any split (raises).  Test videos of classes absent from a
    split's training set count as errors (with a warning).

    ``multi_labels`` (ActivityNet untrimmed, Sports-1M): all true classes of each of the ``N`` videos.  The SVM
    still trains one-vs-rest on the single label ``y``; the metrics use every true class: a class's AP counts
    each video holding it as a positive (ActivityNet mean AP), and a video is a top-k hit when any of its
    classes is in its top k.  Classes that are never a training label have no classifier and are left out.
    """
    X, y, multi_labels = _checked(X, y, splits, multi_labels)
    per, names = [], []
    seen = np.zeros(len(y), dtype=bool)
    disjoint = True
    pooled_scores, pooled_true = [], []
    all_classes = np.unique(y)
    for s in splits:
        used = np.concatenate([s.train, s.test])
        if (y[used] == -1).any():
            raise ValueError(f"split {s.name!r}: {(y[used] == -1).sum()} video(s) have no label")
        if len(s.test) == 0:
            raise ValueError(f"split {s.name!r}: empty test set")
        classes, scores, ytrue = fit_predict(X, y, s, cfg)
        if (ytrue < 0).any():
            warnings.warn(
                f"split {s.name!r}: {(ytrue < 0).sum()} test video(s) of classes absent from training", stacklevel=2
            )
        if multi_labels is not None:
            ytrue = multi_hot([multi_labels[i] for i in s.test], classes)
        per.append(_split_metrics(scores, ytrue, topk, len(s.test)))
        names.append(s.name)
        disjoint &= not seen[s.test].any()
        seen[s.test] = True
        # scores over all classes of the data set (missing columns -inf) so folds can be pooled
        full = np.full((len(s.test), len(all_classes)), -np.inf)
        full[:, np.searchsorted(all_classes, classes)] = scores
        pooled_scores.append(full)
        if multi_labels is not None:
            pooled_true.append(multi_hot([multi_labels[i] for i in s.test], all_classes))
        else:
            pooled_true.append(np.searchsorted(all_classes, y[s.test]))
    mean, sem = _mean_sem(per)
    pooled = None
    if pool:
        if not disjoint:
            raise ValueError("pooled metrics need disjoint test sets; these splits overlap")
        S, T = np.concatenate(pooled_scores), np.concatenate(pooled_true)
        S = np.where(np.isfinite(S), S, np.nanmin(S[np.isfinite(S)]) - 1.0)
        pooled = classification_metrics(S, T, topk)
    return ProtocolResult(per, mean, sem, pooled, names)


def pca_dimension_study(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    dims: Sequence[int],
    cfg: SVMConfig = SVMConfig(),
    metric: str = "top1",
    pool: bool = False,
) -> list[tuple[int, float]]:
    """Accuracy of the linear SVM after PCA to each of ``dims`` (paper, Fig. 7).

    Dimensions larger than a split allows (number of training videos or feature dimension) are skipped with a
    warning rather than failing the study.  Returns ``[(dim, metric), ...]`` in the order of ``dims``.
    """
    out = []
    limit = min(min(len(s.train) for s in splits), X.shape[1])
    for d in dims:
        if d > limit:
            warnings.warn(f"PCA dimension {d} skipped: at most {limit} is possible here", stacklevel=2)
            continue
        res = run_protocol(X, y, splits, SVMConfig(cfg.C, cfg.normalize, int(d), cfg.max_iter, cfg.seed), pool=pool)
        out.append((int(d), res.summary()[metric]))
    return out


def iter_metrics(res: ProtocolResult) -> Iterator[tuple[str, float, float | None]]:
    """``(metric, value, standard error or None)`` rows for printing."""
    if res.pooled is not None:
        for k, v in res.pooled.items():
            yield k, v, None
    else:
        for k, v in res.mean.items():
            yield k, v, res.sem.get(k)
