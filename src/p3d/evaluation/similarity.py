"""Action similarity labeling, ASLAN protocol (paper, Sec. 5, Table 6; Kliper-Gross et al., TPAMI 2012).

For a pair of videos and each representation (the paper uses four video-averaged P3D layers: prob, pool5,
res5c and the last res4 unit), twelve similarities between the two descriptors ``x1``, ``x2`` are computed
(element-wise, summed over dimensions):

====  ===========================================  ====  =============================================
 1    Σ x1·x2                                        7    Σ |x1 − x2|
 2    √(Σ x1·x2)                                     8    √(Σ (√x1 − √x2)²)
 3    √(Σ √x1·√x2)                                   9    √(Σ (x1 − x2)²)                      [normalised]
 4    √(Σ x1·x2 / (x1 + x2))                        10    (Σ x1 log(x1/x2) + Σ x2 log(x2/x1))/2 [normalised]
 5    cosine x1·x2 / (‖x1‖ ‖x2‖)                    11    Σ √max(x1, x2) / √(x1 + x2)          [normalised]
 6    √(Σ (x1 − x2)² / (x1 + x2))                   12    Σ min(x1, x2) / (Σ x1 · Σ x2)         [normalised]
====  ===========================================  ====  =============================================

Measures 9–12 are computed on L1-normalised descriptors (``x / Σ x``: histograms, which is what the
KL-divergence and the intersection need).  The 4 × 12 values form a 48-d pair vector, L2-normalised, fed to a
linear SVM; View-2 is 10-fold cross-validation (10 subsets of 600 pairs, half "same"), reported as mean
accuracy ± standard error and ROC AUC.

Safe transform (documented choice).  Several measures take square roots, logarithms or ratios, which need
non-negative inputs.  prob, pool5 and the ReLU outputs res5c / res4 are non-negative already; for any other
descriptor (logits, PCA-reduced features) each vector is split into its positive and negative parts,
``x -> [max(x, 0), max(−x, 0)]`` (2D dimensions).  This is lossless, and for an already non-negative vector it
changes none of the 12 values, because an element that is zero in both descriptors contributes nothing to any
measure under the conventions below.  Conventions: a term whose denominator ``x1 + x2`` is 0 is 0 (its
numerator is 0 too); the cosine of a zero vector is 0; the L1 normalisation leaves a zero vector at zero; the
KL terms use ``x + ε`` (ε = 1e-10, renormalised) so a zero against a non-zero element gives a large finite
value instead of infinity.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MEASURE_NAMES = (
    "dot",
    "sqrt_dot",
    "sqrt_sqrt_dot",
    "harmonic",
    "cosine",
    "chi2",
    "l1",
    "hellinger",
    "l2_norm",
    "sym_kl_norm",
    "sqrt_max_norm",
    "intersection_norm",
)
NUM_MEASURES = len(MEASURE_NAMES)
KL_EPS = 1e-10


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0."""
    out = np.zeros(np.broadcast_shapes(num.shape, den.shape))
    np.divide(num, den, out=out, where=den > 0)
    return out


def _l1(x: np.ndarray) -> np.ndarray:
    return _safe_div(x, x.sum(axis=-1, keepdims=True))


def similarity_measures(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """The 12 ASLAN measures (module docstring) between rows of ``x1`` and ``x2``.

    Args:
        x1, x2: ``(P, D)`` (or ``(D,)``) descriptors of the first and second video of each pair; negative
            values are handled by :func:`_split`, applied to both with the same decision.
    Returns:
        ``(P, 12)`` float64 (``(12,)`` for 1-D input), columns in the order of :data:`MEASURE_NAMES`.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    if x1.shape != x2.shape or x1.ndim not in (1, 2):
        raise ValueError(f"descriptors must have equal shapes (P, D) or (D,), got {x1.shape} and {x2.shape}")
    single = x1.ndim == 1
    a, b = np.atleast_2d(x1), np.atleast_2d(x2)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("descriptors contain NaN or infinite values")
    if (a < 0).any() or (b < 0).any():  # one decision for both descriptors: they must stay comparable
        a, b = _split(a), _split(b)
    s = a + b
    dot = (a * b).sum(-1)
    m = np.empty((a.shape[0], NUM_MEASURES))
    m[:, 0] = dot
    m[:, 1] = np.sqrt(dot)
    m[:, 2] = np.sqrt((np.sqrt(a) * np.sqrt(b)).sum(-1))
    m[:, 3] = np.sqrt(_safe_div(a * b, s).sum(-1))
    m[:, 4] = _safe_div(dot, np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    m[:, 5] = np.sqrt(_safe_div((a - b) ** 2, s).sum(-1))
    m[:, 6] = np.abs(a - b).sum(-1)
    m[:, 7] = np.sqrt(((np.sqrt(a) - np.sqrt(b)) ** 2).sum(-1))
    na, nb = _l1(a), _l1(b)
    m[:, 8] = np.sqrt(((na - nb) ** 2).sum(-1))
    d = na.shape[-1]
    ka, kb = (na + KL_EPS) / (1 + d * KL_EPS), (nb + KL_EPS) / (1 + d * KL_EPS)
    m[:, 9] = 0.5 * ((ka * np.log(ka / kb)).sum(-1) + (kb * np.log(kb / ka)).sum(-1))
    ns = na + nb
    m[:, 10] = _safe_div(np.sqrt(np.maximum(na, nb)), np.sqrt(ns)).sum(-1)
    m[:, 11] = _safe_div(np.minimum(na, nb).sum(-1), na.sum(-1) * nb.sum(-1))
    return m[0] if single else m


def _split(x: np.ndarray) -> np.ndarray:
    """``(..., D) -> (..., 2D)``: ``[max(x, 0), max(-x, 0)]``, the lossless non-negative transform."""
    return np.concatenate([np.maximum(x, 0.0), np.maximum(-x, 0.0)], axis=-1)


def pair_vectors(
    reps: Mapping[str, np.ndarray], first: np.ndarray, second: np.ndarray, normalize: bool = True
) -> np.ndarray:
    """``(P, 12 * len(reps))`` pair descriptors: the 12 measures of each representation, concatenated.

    Args:
        reps: name -> ``(N, D_r)`` video-level descriptors (same rows for all representations).
        first, second: ``(P,)`` row indices of the two videos of each pair.
        normalize: L2-normalise each pair vector (ASLAN protocol as used in the paper).
    A representation with any negative value is split (see the module docstring) for *all* its videos, so
    every pair of that representation sees the same transform.
    """
    if not reps:
        raise ValueError("no representations given")
    cols = []
    for name, F in reps.items():
        F = np.asarray(F, dtype=np.float64)
        if F.ndim != 2:
            raise ValueError(f"representation {name!r}: expected (N, D) descriptors, got {F.shape}")
        if not np.isfinite(F).all():
            raise ValueError(f"representation {name!r}: descriptors contain NaN or infinite values")
        if (F < 0).any():
            F = _split(F)
        cols.append(similarity_measures(F[first], F[second]))
    v = np.concatenate(cols, axis=1)
    if normalize:
        v = _safe_div(v, np.linalg.norm(v, axis=1, keepdims=True))
    return v


def fold_assignment(n: int, folds: np.ndarray | None, k: int = 10, shuffle_seed: int | None = None) -> np.ndarray:
    """Fold number of each pair: the list's fold column if given, else ``k`` contiguous blocks.

    Contiguous blocks match ASLAN View-2, whose pair file lists its 10 subsets one after another; pass
    ``shuffle_seed`` for lists without such an order (the blocks are then taken over a seeded permutation).
    """
    if folds is not None and (folds >= 0).all():
        if len(np.unique(folds)) < 2:
            raise ValueError("the pair list's fold column holds a single fold")
        return np.asarray(folds)
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= folds <= number of pairs ({n}), got {k}")
    order = np.arange(n) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(n)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) * k // n
    return out


@dataclass
class SimilarityResult:
    """Per-fold accuracy, its mean ± standard error, and ROC AUC of the held-out decision values."""

    fold_accuracy: list[float]
    accuracy: float
    accuracy_sem: float
    auc: float
    fold_auc: list[float]
    scores: np.ndarray  # (P,) held-out SVM decision value of every pair
    same: np.ndarray  # (P,) bool


def evaluate_pairs(
    vectors: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray,
    C: float = 1.0,
    standardize: bool = False,
    seed: int = 0,
) -> SimilarityResult:
    """Cross-validated linear SVM on pair vectors ``(P, F)``: train on all folds but one, test on it.

    ``standardize`` additionally scales each pair-vector dimension to unit variance on the training folds
    (useful when raw measures differ by orders of magnitude; not part of the original protocol).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    vectors = np.asarray(vectors, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if vectors.ndim != 2 or same.shape != (len(vectors),) or folds.shape != same.shape:
        raise ValueError(f"pair vectors (P, F), same (P,), folds (P,) expected: {vectors.shape}, {same.shape}")
    scores = np.zeros(len(same))
    accs, aucs = [], []
    for f in np.unique(folds):
        te = folds == f
        tr = ~te
        if len(np.unique(same[tr])) < 2:
            raise ValueError(f"fold {f}: the training pairs are all 'same' or all 'not same'")
        steps = [StandardScaler()] if standardize else []
        model = make_pipeline(*steps, LinearSVC(C=C, random_state=seed, max_iter=20000, dual="auto"))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Liblinear failed to converge.*")
            model.fit(vectors[tr], same[tr])
        d = model.decision_function(vectors[te])
        scores[te] = d
        accs.append(float(np.mean((d > 0) == same[te])))
        if len(np.unique(same[te])) == 2:
            aucs.append(float(roc_auc_score(same[te], d)))
    k = len(accs)
    sem = float(np.std(accs, ddof=1) / np.sqrt(k)) if k > 1 else 0.0
    return SimilarityResult(accs, float(np.mean(accs)), sem, float(roc_auc_score(same, scores)), aucs, scores, same)


def aslan_evaluate(
    reps: Mapping[str, np.ndarray],
    first: Sequence[int],
    second: Sequence[int],
    same: np.ndarray,
    folds: np.ndarray,
    C: float = 1.0,
    standardize: bool = False,
    seed: int = 0,
) -> SimilarityResult:
    """The whole protocol: 12 measures per representation -> L2-normalised pair vectors -> k-fold SVM."""
    v = pair_vectors(reps, np.asarray(first), np.asarray(second))
    return evaluate_pairs(v, same, folds, C=C, standardize=standardize, seed=seed)
