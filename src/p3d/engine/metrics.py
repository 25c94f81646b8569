"""Top-k hits: the one definition every accuracy in p3d uses (video-level testing, SVM protocols)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["topk_hits", "multi_hot"]


def multi_hot(label_sets: Sequence[Sequence[int]], classes: int | np.ndarray) -> np.ndarray:
    """``(N, len(classes))`` bool: row ``i`` is True at the columns of ``classes`` found in ``label_sets[i]``.

    ``classes``: sorted class numbers, one per column, or a count ``K`` for the columns ``0..K-1``.  Labels not
    among ``classes`` have no column and are dropped.
    """
    classes = np.arange(classes) if isinstance(classes, (int, np.integer)) else np.asarray(classes)
    out = np.zeros((len(label_sets), len(classes)), dtype=bool)
    for i, labs in enumerate(label_sets):
        labs = np.asarray(list(labs), dtype=np.int64)
        cols = np.searchsorted(classes, labs)
        ok = cols < len(classes)
        ok[ok] = classes[cols[ok]] == labs[ok]
        out[i, cols[ok]] = True
    return out


def topk_hits(scores: np.ndarray, y: np.ndarray, k: int = 1) -> np.ndarray:
    """``(N,)`` bool: whether a true class of each row is among its ``k`` highest scores.

    Args:
        scores: ``(N, K)`` class scores.
        y: ``(N,)`` column index of the true class (``-1``: not among the columns, never a hit), or ``(N, K)``
            multi-hot (a hit when *any* true class is in the top ``k``: multi-label videos).
    Ties are broken by column order (stable sort), so a constant score row is not counted as correct for free.
    """
    scores = np.asarray(scores)
    y = np.asarray(y)
    if scores.ndim != 2 or (y.shape != (scores.shape[0],) and y.shape != scores.shape):
        raise ValueError(f"scores must be (N, K) and y (N,) or (N, K), got {scores.shape} and {y.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    if y.ndim == 2:
        return np.take_along_axis(y.astype(bool), top, axis=1).any(axis=1)
    return (top == y[:, None]).any(axis=1)
