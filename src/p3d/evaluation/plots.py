"""Figures: t-SNE embedding (paper, Fig. 6), SVM accuracy vs PCA dimension (paper, Fig. 7), ROC (ASLAN) and the
test confusion matrix.  matplotlib with the non-interactive Agg backend; PNG output written atomically."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from p3d.fileio import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path, dpi: int = 120) -> Path:
    """Write ``fig`` to ``out`` (PNG) atomically and close it."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as PNG; give a .png file name")
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        _pyplot().close(fig)
    return out


def tsne_embedding(
    X: np.ndarray, seed: int = 0, perplexity: float = 30.0, l2_normalize: bool = True, pca_dims: int | None = 50
) -> np.ndarray:
    """2-D t-SNE of video descriptors ``(N, D) -> (N, 2)``.

    Features are L2-normalised, reduced by PCA to ``pca_dims`` (the usual speed-up, skipped if D is smaller),
    then embedded.  The perplexity is lowered to ``(N - 1) / 3`` for small sets (t-SNE needs perplexity < N).
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 4:
        raise ValueError(f"t-SNE needs (N, D) features with N >= 4, got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or infinite values")
    if l2_normalize:
        n = np.linalg.norm(X, axis=1, keepdims=True)
        X = np.divide(X, n, out=np.zeros_like(X), where=n > 0)
    if pca_dims is not None and X.shape[1] > pca_dims and len(X) > pca_dims:
        X = PCA(n_components=pca_dims, random_state=seed).fit_transform(X)
    perp = float(min(perplexity, max(1.0, (len(X) - 1) / 3)))
    return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(X)


def _check_embedding(Y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Y, labels = np.asarray(Y), np.asarray(labels)
    if Y.ndim != 2 or Y.shape[1] != 2 or labels.shape != (len(Y),):
        raise ValueError(f"embedding must be (N, 2) with labels (N,), got {Y.shape} and {labels.shape}")
    return Y, labels


def _scatter(ax, plt, Y: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None, title: str) -> None:
    classes = [c for c in np.unique(labels) if c >= 0]
    cmap = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
    for i, c in enumerate(classes):
        sel = labels == c
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        ax.scatter(Y[sel, 0], Y[sel, 1], s=14, color=cmap(i % cmap.N), label=name)
    if (labels < 0).any():
        sel = labels < 0
        ax.scatter(Y[sel, 0], Y[sel, 1], s=10, color="0.6", label="unlabelled")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    if len(classes) <= 25:
        ax.legend(fontsize=7, markerscale=1.2, loc="best", frameon=False)


def plot_embedding(
    Y: np.ndarray,
    labels: np.ndarray,
    out: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Scatter plot of a 2-D embedding ``(N, 2)`` coloured by ``labels`` ``(N,)`` (-1: unlabelled, grey)."""
    Y, labels = _check_embedding(Y, labels)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    _scatter(ax, plt, Y, labels, class_names, title)
    return _save(fig, out)


def plot_embeddings(
    panels: Mapping[str, tuple[np.ndarray, np.ndarray]],
    out: str | Path,
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Several embeddings side by side in one figure: panel title -> (``(N, 2)`` embedding, ``(N,)`` labels),
    e.g. the same videos described by two models."""
    if not panels:
        raise ValueError("no embeddings to plot")
    checked = {name: _check_embedding(Y, lab) for name, (Y, lab) in panels.items()}
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(checked), figsize=(5.5 * len(checked), 5.2), squeeze=False)
    for ax, (name, (Y, lab)) in zip(axes[0], checked.items(), strict=True):
        _scatter(ax, plt, Y, lab, class_names, name)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_pca_study(
    curves: Mapping[str, Sequence[tuple[int, float]]], out: str | Path, metric: str = "accuracy", title: str = ""
) -> Path:
    """One curve per feature set: ``metric`` (0..1, plotted in %) against the PCA dimension (log x-axis)."""
    if not curves or not any(len(v) for v in curves.values()):
        raise ValueError("no PCA study results to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, pts in curves.items():
        if not pts:
            continue
        d, a = zip(*sorted(pts), strict=True)
        ax.plot(d, 100 * np.asarray(a), marker="o", label=name)
    ax.set_xscale("log")
    dims = sorted({d for pts in curves.values() for d, _ in pts})
    ax.set_xticks(dims)
    ax.set_xticklabels([str(d) for d in dims])
    ax.set_xlabel("feature dimension after PCA")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_roc(scores: np.ndarray, positive: np.ndarray, out: str | Path, title: str = "") -> Path:
    """ROC curve of held-out decision values (ASLAN)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(positive, scores)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {100 * roc_auc_score(positive, scores):.2f}%")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_confusion(
    confusion: list[list[int]] | np.ndarray, classes: list[str], path: str | Path, title: str = ""
) -> None:
    """Row-normalised confusion matrix (true class rows, predicted class columns) as a PNG."""
    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(classes)
    side = min(max(4.0, 0.35 * k + 2), 40.0)
    fig, ax = plt.subplots(figsize=(side, side))
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    if k <= 40:
        ax.set_xticks(range(k), classes, rotation=90, fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        int(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (rows normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path, dpi=100)


def plot_timeline(
    window_times: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    out: str | Path,
    segments: Sequence[Mapping] | None = None,
    ground_truth: Sequence[Mapping] | None = None,
    smoothed: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """One untrimmed video's class scores over time as a heat strip (classes down, time in seconds across).

    ``window_times`` ``(W, 2)``: each window's [start, end] s; ``scores`` ``(W, K)``; ``smoothed`` ``(W, K)``:
    drawn as a second strip below.  Each window is painted from the midpoint with its predecessor to the
    midpoint with its successor (centres of overlapping windows).  ``segments`` (detections ``{"start", "end",
    "label", "score"}``) are outlined on their class's row with their score; ``ground_truth`` (``{"start",
    "end", "label"}``) is a green bar along the top of its row, above the detections.  Labels are class names
    or column indices.  PNG, written atomically."""
    t = np.asarray(window_times, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or t.shape != (len(s), 2) or len(s) == 0:
        raise ValueError(f"need scores (W, K) with W >= 1 and window_times (W, 2), got {s.shape} and {t.shape}")
    if len(class_names) != s.shape[1]:
        raise ValueError(f"class_names has {len(class_names)} names for {s.shape[1]} score columns")
    strips = [("scores", s)]
    if smoothed is not None:
        sm = np.asarray(smoothed, dtype=np.float64)
        if sm.shape != s.shape:
            raise ValueError(f"smoothed must have the scores' shape {s.shape}, got {sm.shape}")
        strips.append(("smoothed", sm))
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: plots are written as PNG; give a .png file name")
    row = {name: i for i, name in enumerate(class_names)}

    def row_of(item: Mapping, what: str) -> int:
        label = item["label"]
        k = row.get(label, label if isinstance(label, int | np.integer) and 0 <= label < len(class_names) else None)
        if k is None:
            raise ValueError(f"{what} label {label!r} is not one of the {len(class_names)} class names")
        if float(item["end"]) < float(item["start"]):
            raise ValueError(f"{what} [{item['start']}, {item['end']}] ends before it starts")
        return int(k)

    gt = [(row_of(g, "ground truth"), float(g["start"]), float(g["end"])) for g in ground_truth or ()]
    det = [(row_of(d, "segment"), float(d["start"]), float(d["end"]), d.get("score")) for d in segments or ()]

    centres = t.mean(axis=1)
    edges = np.concatenate([[t[0, 0]], (centres[1:] + centres[:-1]) / 2, [t[-1, 1]]])
    vmin, vmax = min(0.0, float(s.min())), max(1.0, float(s.max()))
    plt = _pyplot()
    k = s.shape[1]
    height = min(40.0, 0.28 * k + 1.2)
    fig, axes = plt.subplots(
        len(strips), 1, figsize=(11, height * len(strips) + 0.6), sharex=True, squeeze=False, constrained_layout=True
    )
    for ax, (name, values) in zip(axes[:, 0], strips, strict=True):
        mesh = ax.pcolormesh(edges, np.arange(k + 1) - 0.5, values.T, cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_ylim(k - 0.5, -0.5)
        ax.set_yticks(range(k))
        ax.set_yticklabels(class_names, fontsize=8 if k <= 30 else 5)
        ax.set_ylabel(name)
        for r, a, b in gt:
            ax.add_patch(plt.Rectangle((a, r - 0.5), b - a, 0.22, color="limegreen", lw=0))
        for r, a, b, score in det:
            ax.add_patch(plt.Rectangle((a, r - 0.24), b - a, 0.68, fill=False, edgecolor="red", lw=1.6))
            if score is not None and ax is axes[-1, 0]:
                ax.text(a, r + 0.3, f"{float(score):.2f}", color="white", fontsize=7, va="bottom")
        fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.01)
    axes[-1, 0].set_xlabel("time (s)")
    axes[-1, 0].set_xlim(edges[0], edges[-1])
    handles = [
        plt.Rectangle((0, 0), 1, 1, color="limegreen", label="ground truth"),
        plt.Rectangle((0, 0), 1, 1, fill=False, edgecolor="red", lw=1.6, label="detection (score)"),
    ]
    axes[0, 0].legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, out, dpi=110)
