"""Temporal localisation in untrimmed videos (ActivityNet): tIoU, temporal NMS, score smoothing, segments from
per-window class scores, ActivityNet's detection and untrimmed-classification metrics, and their files.

Times are seconds from a video's first frame.  A segment is ``[start, end]`` with ``end >= start``; detections
and ground-truth instances are dicts ``{"start", "end", "label"[, "score"]}`` grouped by video id.

The metrics follow the official ActivityNet evaluation (github.com/activitynet/ActivityNet, ``Evaluation/``):

* detection (``eval_detection.py``, ``compute_average_precision_detection``): per class, predictions sorted by
  decreasing score; each one is matched, per tIoU threshold, to the not yet matched ground-truth instance of
  its video with the highest tIoU >= the threshold (true positive), else it is a false positive (a second
  detection of a matched instance, or a detection in a video without an instance of its class).  AP is the
  area under the precision/recall curve made monotone (``utils.interpolated_prec_rec``, VOC 2011); thresholds
  0.5:0.05:0.95, mAP per threshold over the classes of the ground truth, and their mean ("average mAP").
* untrimmed classification (``eval_classification.py``): hit@k (a video counts if one of its ground-truth
  labels is among its k best-scored labels) and the same interpolated AP with one "instance" per
  (video, label).

Public API::

    temporal_iou(segment (2,) | (M, 2), segments (N, 2)) -> (N,) | (M, N)
    temporal_nms(segments (N, 2), scores (N,), iou_threshold=0.5, method="hard"|"linear"|"gaussian")
        -> (kept indices (M,), their scores (M,))
    smooth_scores(scores (W, K), window, method="mean"|"gaussian") -> (W, K)
    detect_segments(window_scores (W, K), window_times (W, 2), threshold=..., ...) -> [{start, end, label, score}]
    pool_window_scores(window_scores (W, K), method="mean"|"max"|"topk", k=...) -> (K,)
    evaluate_detection(ground_truth, detections) -> DetectionResult (ap (T, C), mAP (T,), average_mAP)
    evaluate_video_classification(ground_truth, video_scores, class_names) -> ClassificationResult
    read_ground_truth(json, subset="validation") -> GroundTruth
    read_detections(json | csv) / write_detections(json | csv, detections); write_classifications(json, ...)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p3d.fileio import atomic_write_json, atomic_write_text

# ActivityNet detection thresholds 0.5:0.05:0.95 (eval_detection.py: np.linspace(0.5, 0.95, 10)).
TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
DETECTION_CSV_COLUMNS = ("video_id", "start", "end", "label", "score")
SUBMISSION_VERSION = "VERSION 1.3"

Detections = Mapping[str, Sequence[Mapping[str, Any]]]


# ---------------------------------------------------------------------------------------------------------
# Segments: tIoU and NMS
# ---------------------------------------------------------------------------------------------------------
def _segments_array(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size == 0:
        a = a.reshape(0, 2)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) [start, end] pairs, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite times")
    bad = np.flatnonzero(a[:, 1] < a[:, 0])
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] = {a[bad[0]].tolist()} ends before it starts")
    return a


def temporal_iou(segment: Any, segments: Any) -> np.ndarray:
    """Temporal intersection over union of ``segment`` ``(2,)`` with each of ``segments`` ``(N, 2)`` -> ``(N,)``;
    ``segment`` may also be ``(M, 2)`` -> ``(M, N)``.  Seconds (any unit works).  Two zero-length segments have
    union 0 and tIoU 0 (the official ``utils.segment_iou`` divides by zero there)."""
    single = np.ndim(segment) == 1
    a = _segments_array(np.atleast_2d(segment), "segment")
    b = _segments_array(segments, "segments")
    inter = np.clip(np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou[0] if single else iou


NMS_METHODS = ("hard", "linear", "gaussian")


def temporal_nms(
    segments: Any,
    scores: Any,
    iou_threshold: float = 0.5,
    *,
    method: str = "hard",
    sigma: float = 0.5,
    min_score: float = 0.0,
    max_segments: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Non-maximum suppression of segments ``(N, 2)`` with ``scores`` ``(N,)``.

    Returns ``(keep, kept_scores)``: indices into ``segments`` in the order they were selected (decreasing
    score) and their scores after suppression.  Equal scores are taken in index order.

    * ``method="hard"``: take the best remaining segment, drop every remaining one whose tIoU with it is
      ``> iou_threshold``; repeat.  Kept scores are unchanged.
    * Soft-NMS (Bodla et al., "Soft-NMS", ICCV 2017, Eq. 2-3): instead of dropping, the scores of the remaining
      segments decay after each selection -- ``"linear"``: ``s *= 1 - tIoU`` where ``tIoU > iou_threshold``;
      ``"gaussian"``: ``s *= exp(-tIoU**2 / sigma)`` for all (``iou_threshold`` unused).  The next selection is
      the best *decayed* score.

    Segments whose (decayed) score falls below ``min_score`` are dropped (Bodla et al. use 0.001 for soft-NMS);
    at most ``max_segments`` are returned.
    """
    seg = _segments_array(segments, "segments")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(seg),):
        raise ValueError(f"scores must be ({len(seg)},) for {len(seg)} segments, got shape {s.shape}")
    if method not in NMS_METHODS:
        raise ValueError(f"unknown NMS method {method!r}; expected one of {NMS_METHODS}")
    if not 0.0 <= iou_threshold <= 1.0 or sigma <= 0:
        raise ValueError(f"need 0 <= iou_threshold <= 1 and sigma > 0, got {iou_threshold}, {sigma}")
    limit = len(seg) if max_segments is None else max(0, int(max_segments))
    keep: list[int] = []
    kept: list[float] = []
    if method == "hard":
        order = np.argsort(-s, kind="stable")
        order = order[s[order] >= min_score]
        while order.size and len(keep) < limit:
            i, rest = order[0], order[1:]
            keep.append(int(i))
            kept.append(float(s[i]))
            order = rest[temporal_iou(seg[i], seg[rest]) <= iou_threshold]
    else:
        current = s.copy()
        alive = np.flatnonzero(current >= min_score)
        while alive.size and len(keep) < limit:
            i = alive[np.argmax(current[alive])]  # argmax: the first (lowest index) of equal scores
            keep.append(int(i))
            kept.append(float(current[i]))
            alive = alive[alive != i]
            iou = temporal_iou(seg[i], seg[alive])
            if method == "linear":
                current[alive] *= np.where(iou > iou_threshold, 1.0 - iou, 1.0)
            else:
                current[alive] *= np.exp(-(iou**2) / sigma)
            alive = alive[current[alive] >= min_score]
    return np.asarray(keep, dtype=np.int64), np.asarray(kept, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------------
# Per-window scores -> segments
# ---------------------------------------------------------------------------------------------------------
SMOOTHING_METHODS = ("mean", "gaussian")


def smooth_scores(scores: Any, window: int, method: str = "mean", sigma: float | None = None) -> np.ndarray:
    """Smooth per-window class scores ``(W, K)`` (or ``(W,)``) along the window axis, each class on its own.

    A centred weighted average over ``window`` neighbouring windows (odd; 1 returns a copy): ``"mean"`` weighs
    them equally, ``"gaussian"`` by ``exp(-d**2 / (2 sigma**2))`` at distance ``d`` windows (``sigma`` default
    ``window / 6``, so the window spans about +-3 sigma).  At the ends only the windows that exist count (the
    weights are renormalised), so a constant score stays constant.
    """
    x = np.asarray(scores, dtype=np.float64)
    flat = x.ndim == 1
    if flat:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"scores must be (W, K) per-window class scores, got shape {x.shape}")
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"smoothing window must be an odd number of windows >= 1, got {window}")
    if method not in SMOOTHING_METHODS:
        raise ValueError(f"unknown smoothing method {method!r}; expected one of {SMOOTHING_METHODS}")
    if len(x) == 0:
        return np.array(scores, dtype=np.float64)
    half = int(window) // 2
    d = np.arange(-half, half + 1, dtype=np.float64)
    if method == "mean":
        kernel = np.ones_like(d)
    else:
        sig = window / 6.0 if sigma is None else float(sigma)
        if sig <= 0:
            raise ValueError(f"gaussian smoothing needs sigma > 0, got {sigma}")
        kernel = np.exp(-0.5 * (d / sig) ** 2)
    padded = np.pad(x, ((half, half), (0, 0)))
    present = np.pad(np.ones(len(x)), half)
    num = np.lib.stride_tricks.sliding_window_view(padded, len(d), axis=0) @ kernel  # (W, K)
    den = np.lib.stride_tricks.sliding_window_view(present, len(d)) @ kernel  # (W,)
    out = num / den[:, None]
    return out[:, 0] if flat else out


def _window_times(window_times: Any, num_windows: int) -> np.ndarray:
    t = _segments_array(window_times, "window_times")
    if len(t) != num_windows:
        raise ValueError(f"window_times must be ({num_windows}, 2), one [start, end] per window, got {t.shape}")
    if np.any(np.diff(t[:, 0]) < 0):
        raise ValueError("window_times must be sorted by start time")
    return t


def detect_segments(
    window_scores: Any,
    window_times: Any,
    *,
    threshold: float = 0.5,
    min_duration: float = 0.0,
    nms_iou: float | None = 0.5,
    smoothing: int = 1,
    smoothing_method: str = "mean",
    class_names: Sequence[str] | None = None,
    background: int | None = None,
    class_agnostic_nms: bool = False,
    max_segments: int | None = None,
) -> list[dict[str, Any]]:
    """Action segments from per-window class scores of one video.

    Args:
        window_scores: ``(W, K)`` scores of ``W`` windows (e.g. softmax of clip logits), windows in time order.
        window_times: ``(W, 2)`` ``[start, end]`` of each window in seconds, sorted by start (may overlap).
        threshold: a window is "on" for class ``k`` when its smoothed score is ``>= threshold``.
        min_duration: segments shorter than this (seconds) are dropped.
        nms_iou: hard temporal NMS at this tIoU (``None``: no NMS).  Per class unless ``class_agnostic_nms``.
        smoothing, smoothing_method: window count and method of :func:`smooth_scores` (1: no smoothing).
        class_names: labels of the ``K`` columns (default: the column index).
        background: a column that is a "no action" class: it never forms segments.
        max_segments: keep the best ones only.

    Steps: (1) smooth each class's scores over windows; (2) for each class, every maximal run of consecutive
    windows ``i..j`` that are "on" gives one segment ``[window_times[i, 0], max(window_times[i..j, 1])]`` whose
    **score is the mean of the run's smoothed scores** for that class; windows where no class is on give
    nothing; (3) drop segments shorter than ``min_duration``; (4) hard NMS; (5) sort by decreasing score (equal
    scores: earlier start, then lower class index).

    Returns dicts ``{"start", "end", "label", "score"}`` (floats; ``label`` a class name or column index).
    """
    x = np.asarray(window_scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"window_scores must be (W, K), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("window_scores contains NaN or infinite values")
    times = _window_times(window_times, len(x))
    num_classes = x.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} score columns")
    if background is not None and not 0 <= background < num_classes:
        raise ValueError(f"background column {background} out of range [0, {num_classes})")
    if min_duration < 0 or (nms_iou is not None and not 0.0 <= nms_iou <= 1.0):
        raise ValueError(f"need min_duration >= 0 and 0 <= nms_iou <= 1, got {min_duration}, {nms_iou}")
    smoothed = smooth_scores(x, smoothing, smoothing_method)

    found: list[tuple[float, float, int, float]] = []  # start, end, class, score
    for k in range(num_classes):
        if k == background:
            continue
        on = np.concatenate([[False], smoothed[:, k] >= threshold, [False]])
        edges = np.flatnonzero(np.diff(on.astype(np.int8)))
        for i, j in zip(edges[0::2], edges[1::2], strict=True):  # run of windows i .. j - 1
            start, end = times[i, 0], times[i:j, 1].max()
            if end - start >= min_duration:
                found.append((float(start), float(end), k, float(smoothed[i:j, k].mean())))
    if nms_iou is not None and found:
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(found):
            groups.setdefault(-1 if class_agnostic_nms else f[2], []).append(i)
        kept: list[int] = []
        for idx in groups.values():
            seg = np.array([found[i][:2] for i in idx])
            keep, _ = temporal_nms(seg, np.array([found[i][3] for i in idx]), nms_iou)
            kept += [idx[i] for i in keep]
        found = [found[i] for i in kept]
    found.sort(key=lambda f: (-f[3], f[0], f[2]))
    if max_segments is not None:
        found = found[: max(0, int(max_segments))]
    labels: Sequence[Any] = class_names if class_names is not None else range(num_classes)
    return [{"start": s, "end": e, "label": labels[k], "score": sc} for s, e, k, sc in found]


POOLING_METHODS = ("mean", "max", "topk")


def pool_window_scores(window_scores: Any, method: str = "mean", k: int | None = None) -> np.ndarray:
    """One video's class scores ``(K,)`` from its window scores ``(W, K)``: the ``"mean"`` or ``"max"`` over
    windows, or ``"topk"``: per class, the mean of its ``k`` highest window scores (``k`` capped at ``W``)."""
    x = np.asarray(window_scores, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"window_scores must be (W, K) with W >= 1, got shape {x.shape}")
    if method == "mean":
        return x.mean(axis=0)
    if method == "max":
        return x.max(axis=0)
    if method == "topk":
        if k is None or k < 1:
            raise ValueError(f"top-k pooling needs k >= 1, got {k}")
        kk = min(int(k), len(x))
        return np.sort(x, axis=0)[-kk:].mean(axis=0)
    raise ValueError(f"unknown pooling {method!r}; expected one of {POOLING_METHODS}")


# ---------------------------------------------------------------------------------------------------------
# ActivityNet metrics (the official algorithms, without pandas)
# ---------------------------------------------------------------------------------------------------------
def interpolated_average_precision(precision: Any, recall: Any) -> float:
    """Area under the precision/recall curve with precision made non-increasing (VOC 2011 devkit; the
    official ``utils.interpolated_prec_rec``): the curve is extended with (recall 0, precision 0) and
    (recall 1, precision 0), each precision replaced by the best precision at equal or higher recall, and the
    area summed over the recall steps."""
    mprec = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    mrec = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


def _descending(scores: np.ndarray) -> np.ndarray:
    # The official code sorts with ``argsort()[::-1]``; its default (unstable) sort leaves the order of equal
    # scores unspecified.  A stable sort reversed is that order made deterministic: of equal scores, the later
    # entry first (what the official code gives wherever numpy's sort happens to be stable, e.g. short arrays
    # without SIMD sorting).
    return np.argsort(scores, kind="stable")[::-1]


def average_precision_detection(
    gt_videos: Sequence[str],
    gt_segments: Any,
    pred_videos: Sequence[str],
    pred_segments: Any,
    pred_scores: Any,
    tiou_thresholds: Any = TIOU_THRESHOLDS,
) -> np.ndarray:
    """AP of one class at each tIoU threshold -> ``(T,)``, as ActivityNet's
    ``compute_average_precision_detection``.

    ``gt_videos`` ``(G,)`` / ``gt_segments`` ``(G, 2)``: the class's ground-truth instances; ``pred_videos``
    ``(P,)``, ``pred_segments`` ``(P, 2)``, ``pred_scores`` ``(P,)``: its predictions.  Predictions are taken by
    decreasing score; at each threshold a prediction is a true positive if, among its video's instances sorted
    by decreasing tIoU, the first one not yet matched has tIoU >= the threshold (it is then matched), else a
    false positive.  No predictions: AP 0; no instances: AP NaN (undefined; the official code never asks).
    """
    thr = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    gts = _segments_array(gt_segments, "gt_segments")
    preds = _segments_array(pred_segments, "pred_segments")
    scores = np.asarray(pred_scores, dtype=np.float64)
    if len(gt_videos) != len(gts) or len(pred_videos) != len(preds) or scores.shape != (len(preds),):
        raise ValueError(
            f"need one video id per segment and one score per prediction: {len(gt_videos)} ids for {len(gts)} "
            f"instances, {len(pred_videos)} ids and {scores.shape} scores for {len(preds)} predictions"
        )
    if len(preds) == 0:
        return np.zeros(len(thr))
    if len(gts) == 0:
        return np.full(len(thr), np.nan)
    by_video: dict[str, list[int]] = {}
    for g, v in enumerate(gt_videos):
        by_video.setdefault(v, []).append(g)
    matched = np.zeros((len(thr), len(gts)), dtype=bool)
    tp = np.zeros((len(thr), len(preds)))
    fp = np.zeros((len(thr), len(preds)))
    for rank, p in enumerate(_descending(scores)):
        own = by_video.get(pred_videos[p])
        if own is None:
            fp[:, rank] = 1
            continue
        iou = temporal_iou(preds[p], gts[own])
        order = _descending(iou)
        candidates = [(own[j], iou[j]) for j in order]
        for t, th in enumerate(thr):
            for g, value in candidates:
                if value < th:
                    break
                if not matched[t, g]:
                    matched[t, g] = True
                    tp[t, rank] = 1
                    break
            fp[t, rank] = 1 - tp[t, rank]
    tp_c, fp_c = np.cumsum(tp, axis=1), np.cumsum(fp, axis=1)
    recall, precision = tp_c / len(gts), tp_c / (tp_c + fp_c)
    return np.array([interpolated_average_precision(precision[t], recall[t]) for t in range(len(thr))])


def average_precision_classification(gt_videos: Sequence[str], pred_videos: Sequence[str], pred_scores: Any) -> float:
    """AP of one class for untrimmed classification, as ActivityNet's
    ``compute_average_precision_classification``: ``gt_videos`` are the videos that have the class (each counts
    once), ``pred_videos``/``pred_scores`` ``(P,)`` the predictions of the class.  By decreasing score, a
    prediction is a true positive if its video has the class and was not predicted before, else a false
    positive.  No videos with the class: NaN."""
    scores = np.asarray(pred_scores, dtype=np.float64)
    if scores.shape != (len(pred_videos),):
        raise ValueError(f"need one score per prediction, got {scores.shape} for {len(pred_videos)} videos")
    positives = set(gt_videos)
    if not positives:
        return float("nan")
    seen: set[str] = set()
    tp = np.zeros(len(scores))
    for rank, p in enumerate(_descending(scores)):
        v = pred_videos[p]
        if v in positives and v not in seen:
            seen.add(v)
            tp[rank] = 1
    tp_c, fp_c = np.cumsum(tp), np.cumsum(1 - tp)
    return interpolated_average_precision(tp_c / (tp_c + fp_c), tp_c / len(positives))


def hit_at_k(
    gt_labels: Mapping[str, Sequence[str]],
    predictions: Mapping[str, Sequence[tuple[str, float]]],
    k: int,
    average: bool = False,
) -> float:
    """ActivityNet's ``compute_video_hit_at_k``: over the videos of ``gt_labels`` (video -> its labels), the
    share whose ``k`` best-scored predicted ``(label, score)`` pairs contain one of its labels (``average``:
    the share of its labels they contain, averaged).  A video without predictions scores 0."""
    if k < 1:
        raise ValueError(f"hit@k needs k >= 1, got {k}")
    hits = []
    for vid in sorted(gt_labels):
        labels = set(gt_labels[vid])
        preds = predictions.get(vid, ())
        if not labels:
            continue
        if not preds:
            hits.append(0.0)
            continue
        scores = np.array([s for _, s in preds], dtype=np.float64)
        top = {preds[i][0] for i in _descending(scores)[:k]}
        share = np.mean([lab in top for lab in labels])
        hits.append(float(share) if average else float(math.ceil(share)))
    return float(np.mean(hits)) if hits else 0.0


# ---------------------------------------------------------------------------------------------------------
# Ground truth and evaluation
# ---------------------------------------------------------------------------------------------------------
@dataclass
class GroundTruth:
    """Annotated segments of the videos of one subset.

    ``segments``: video id -> ``[{"start", "end", "label"}]`` for every video of the subset (``[]`` when it has
    no instance).  ``classes``: every label a prediction may use, sorted -- the annotated labels of the whole
    file plus the taxonomy's leaf nodes (default: the labels in ``segments``).  ``durations``: seconds, where
    known.  Metrics average over the classes that have an instance in ``segments`` (:attr:`evaluated_classes`),
    like the official code.
    """

    segments: dict[str, list[dict[str, Any]]]
    classes: list[str] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    subset: str | None = None

    def __post_init__(self) -> None:
        for vid, anns in self.segments.items():
            for k, a in enumerate(anns):
                _check_instance(a, f"ground truth: video {vid}: annotation {k}", scored=False)
        labels = {a["label"] for anns in self.segments.values() for a in anns}
        self.classes = sorted(set(self.classes) | labels)

    @property
    def evaluated_classes(self) -> list[str]:
        return sorted({a["label"] for anns in self.segments.values() for a in anns})


def _check_instance(a: Any, where: str, scored: bool) -> None:
    if not isinstance(a, Mapping):
        raise ValueError(f"{where}: expected a dict with start, end, label, got {type(a).__name__}")
    keys = ("start", "end", "label", "score") if scored else ("start", "end", "label")
    missing = [k for k in keys if k not in a]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}")
    try:
        s, e = float(a["start"]), float(a["end"])
        sc = float(a["score"]) if scored else 0.0
    except (TypeError, ValueError):
        raise ValueError(f"{where}: start, end and score must be numbers") from None
    if not (math.isfinite(s) and math.isfinite(e) and math.isfinite(sc)):
        raise ValueError(f"{where}: times and scores must be finite, got [{s}, {e}]")
    if e < s:
        raise ValueError(f"{where}: segment [{s}, {e}] ends before it starts")
    if not isinstance(a["label"], str):
        raise ValueError(f"{where}: label must be a class name, got {a['label']!r}")


def _checked_detections(detections: Detections, known: Sequence[str] | None, source: str = "") -> None:
    """Every detection well formed (and, given ``known``, with a known label); errors name the video."""
    names = set(known) if known is not None else None
    for vid, dets in detections.items():
        for k, d in enumerate(dets):
            where = f"{source}video {vid}: detection {k}"
            _check_instance(d, where, scored=True)
            if names is not None and d["label"] not in names:
                raise ValueError(f"{where}: label {d['label']!r} is not a class of the ground truth")


@dataclass
class DetectionResult:
    """``ap`` ``(T, C)``: AP of class ``classes[c]`` at tIoU ``tiou_thresholds[t]``."""

    ap: np.ndarray
    classes: list[str]
    tiou_thresholds: np.ndarray

    @property
    def mAP(self) -> np.ndarray:  # noqa: N802 -- the metric's name
        """``(T,)`` mean AP over classes at each threshold."""
        return self.ap.mean(axis=1)

    @property
    def average_mAP(self) -> float:  # noqa: N802
        """The mean of :attr:`mAP` over the thresholds (ActivityNet's headline number)."""
        return float(self.mAP.mean())

    def as_dict(self) -> dict[str, Any]:
        return {
            "tiou_thresholds": [round(float(t), 4) for t in self.tiou_thresholds],
            "mAP": [float(m) for m in self.mAP],
            "average_mAP": self.average_mAP,
            "ap": {c: [float(v) for v in self.ap[:, i]] for i, c in enumerate(self.classes)},
        }


def evaluate_detection(
    ground_truth: GroundTruth, detections: Detections, tiou_thresholds: Any = TIOU_THRESHOLDS
) -> DetectionResult:
    """ActivityNet detection AP of every class with a ground-truth instance, at each tIoU threshold.

    ``detections``: video id -> ``[{"start", "end", "label", "score"}]`` (e.g. :func:`detect_segments` with
    ``class_names``, or :func:`read_detections`).  As in the official code every detection counts, also in
    videos outside the ground truth's subset (false positives); a class without detections has AP 0.  A label
    outside ``ground_truth.classes`` is an error; detections of a known class without instances in the subset
    cannot change any AP and are ignored (the official code stops with a KeyError there).
    """
    _checked_detections(detections, ground_truth.classes)
    thr = np.asarray(tiou_thresholds, dtype=np.float64).reshape(-1)
    classes = ground_truth.evaluated_classes
    ap = np.zeros((len(thr), len(classes)))
    gt = {c: ([], []) for c in classes}
    for vid, anns in ground_truth.segments.items():
        for a in anns:
            gt[a["label"]][0].append(vid)
            gt[a["label"]][1].append((float(a["start"]), float(a["end"])))
    pred: dict[str, tuple[list[str], list[tuple[float, float]], list[float]]] = {c: ([], [], []) for c in classes}
    for vid, dets in detections.items():
        for d in dets:
            if d["label"] in pred:
                v, s, sc = pred[d["label"]]
                v.append(vid)
                s.append((float(d["start"]), float(d["end"])))
                sc.append(float(d["score"]))
    for c, name in enumerate(classes):
        ap[:, c] = average_precision_detection(*gt[name], *pred[name], tiou_thresholds=thr)
    return DetectionResult(ap=ap, classes=classes, tiou_thresholds=thr)


@dataclass
class ClassificationResult:
    """Untrimmed-video classification: ``ap`` ``(C,)`` per class of ``classes``, ``hits[k]`` = hit@k (a video
    counts if any of its labels is in its top k) and ``average_hits[k]`` (share of its labels in its top k)."""

    ap: np.ndarray
    classes: list[str]
    hits: dict[int, float]
    average_hits: dict[int, float]

    @property
    def mAP(self) -> float:  # noqa: N802
        return float(self.ap.mean()) if len(self.ap) else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mAP": self.mAP,
            **{f"hit@{k}": v for k, v in self.hits.items()},
            **{f"avg_hit@{k}": v for k, v in self.average_hits.items()},
            "ap": {c: float(v) for c, v in zip(self.classes, self.ap, strict=True)},
        }


def evaluate_video_classification(
    ground_truth: GroundTruth,
    video_scores: Mapping[str, Any],
    class_names: Sequence[str],
    top_k: Sequence[int] = (1, 3),
) -> ClassificationResult:
    """ActivityNet untrimmed classification of ``video_scores`` (video id -> ``(K,)`` class scores, e.g.
    :func:`pool_window_scores`), column ``k`` being class ``class_names[k]``.

    Every video predicts every class with its score.  Ground truth: the (video, label) pairs of the subset's
    annotations.  AP per class with an instance (official ``compute_average_precision_classification``; scored
    videos outside the subset are false positives), hit@k over the annotated videos of the subset.
    """
    known = set(ground_truth.classes)
    unknown = [c for c in class_names if c not in known]
    if unknown:
        raise ValueError(f"class_names: {unknown[0]!r} is not a class of the ground truth")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class_names has duplicate names")
    videos = list(video_scores)
    scores = np.zeros((len(videos), len(class_names)))
    for i, vid in enumerate(videos):
        s = np.asarray(video_scores[vid], dtype=np.float64)
        if s.shape != (len(class_names),) or not np.isfinite(s).all():
            raise ValueError(f"video {vid}: scores must be ({len(class_names)},) finite values, got shape {s.shape}")
        scores[i] = s
    gt_labels = {v: sorted({a["label"] for a in anns}) for v, anns in ground_truth.segments.items() if anns}
    classes = ground_truth.evaluated_classes
    column = {c: k for k, c in enumerate(class_names)}
    ap = np.zeros(len(classes))  # a class the scores do not cover has no predictions: AP 0
    for c, name in enumerate(classes):
        if name in column:
            have = [v for v, labels in gt_labels.items() if name in labels]
            ap[c] = average_precision_classification(have, videos, scores[:, column[name]])
    preds = {v: list(zip(class_names, scores[i].tolist(), strict=True)) for i, v in enumerate(videos)}
    return ClassificationResult(
        ap=ap,
        classes=classes,
        hits={k: hit_at_k(gt_labels, preds, k) for k in top_k},
        average_hits={k: hit_at_k(gt_labels, preds, k, average=True) for k in top_k},
    )


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
def _load_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _taxonomy_leaves(taxonomy: Any) -> set[str]:
    """Names of the taxonomy nodes that are nobody's parent (ActivityNet: the 200 activity classes)."""
    if not isinstance(taxonomy, list):
        return set()
    nodes = [n for n in taxonomy if isinstance(n, Mapping) and "nodeName" in n]
    parents = {n.get("parentName") for n in nodes}
    return {str(n["nodeName"]) for n in nodes if n["nodeName"] not in parents}


def read_ground_truth(path: str | os.PathLike[str], subset: str | None = "validation") -> GroundTruth:
    """Segments of the videos of ``subset`` (``None``: all) from an ActivityNet v1.3 JSON
    (``{"database": {id: {"subset", "duration", "annotations": [{"segment": [s, e], "label"}]}}, "taxonomy"}``,
    the layout :func:`p3d.data.parse_activitynet` reads; videos are not needed here).  Raises ``ValueError``
    naming the file and video for a malformed entry."""
    p = Path(path)
    data = _load_json(p)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"{p}: not an ActivityNet JSON with a 'database' object")
    segments: dict[str, list[dict[str, Any]]] = {}
    durations: dict[str, float] = {}
    labels: set[str] = set()
    for vid, v in db.items():
        if not isinstance(v, dict) or not isinstance(v.get("annotations", []), list):
            raise ValueError(f"{p}: video {vid}: expected an object with an 'annotations' list")
        anns = []
        for k, a in enumerate(v.get("annotations", [])):
            seg = a.get("segment") if isinstance(a, dict) else None
            if not isinstance(seg, list | tuple) or len(seg) != 2 or "label" not in a:
                raise ValueError(f"{p}: video {vid}: annotation {k} needs 'segment': [start, end] and 'label'")
            try:
                inst = {"start": float(seg[0]), "end": float(seg[1]), "label": a["label"]}
            except (TypeError, ValueError):
                raise ValueError(f"{p}: video {vid}: annotation {k}: segment times must be numbers") from None
            _check_instance(inst, f"{p}: video {vid}: annotation {k}", scored=False)
            labels.add(inst["label"])
            anns.append(inst)
        if subset is not None and v.get("subset") != subset:
            continue
        segments[vid] = anns
        if v.get("duration") is not None:
            durations[vid] = float(v["duration"])
    classes = sorted(labels | _taxonomy_leaves(data.get("taxonomy")))
    return GroundTruth(segments=segments, classes=classes, durations=durations, subset=subset)


def write_detections(
    path: str | os.PathLike[str],
    detections: Detections,
    *,
    version: str = SUBMISSION_VERSION,
    external_data: Mapping[str, Any] | None = None,
) -> Path:
    """Write detections (video id -> ``[{"start", "end", "label", "score"}]``) atomically: ``.json`` in the
    official submission layout ``{"version", "results": {id: [{"segment": [s, e], "label", "score"}]},
    "external_data": {"used", "details"}}``, or ``.csv`` with columns ``video_id,start,end,label,score``."""
    p = Path(path)
    _checked_detections(detections, None)
    if p.suffix.lower() == ".json":
        results = {
            vid: [
                {"segment": [float(d["start"]), float(d["end"])], "label": d["label"], "score": float(d["score"])}
                for d in dets
            ]
            for vid, dets in detections.items()
        }
        ext = dict(external_data) if external_data is not None else {"used": False, "details": ""}
        return atomic_write_json(p, {"version": version, "results": results, "external_data": ext}, indent=None)
    if p.suffix.lower() == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(DETECTION_CSV_COLUMNS)
        for vid, dets in detections.items():
            for d in dets:
                w.writerow([vid, repr(float(d["start"])), repr(float(d["end"])), d["label"], repr(float(d["score"]))])
        return atomic_write_text(p, buf.getvalue())
    raise ValueError(f"{p}: detections are written as .json (ActivityNet submission) or .csv")


def read_detections(path: str | os.PathLike[str], classes: Sequence[str] | None = None) -> dict[str, list[dict]]:
    """Detections from a submission ``.json`` or a ``.csv`` (see :func:`write_detections`) -> video id ->
    ``[{"start", "end", "label", "score"}]``.  With ``classes``, a label outside them is an error."""
    p = Path(path)
    out: dict[str, list[dict[str, Any]]] = {}
    if p.suffix.lower() == ".csv":
        if not p.is_file():
            raise FileNotFoundError(f"{p}: file not found")
        rows = list(csv.reader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
        if not rows or tuple(c.strip() for c in rows[0]) != DETECTION_CSV_COLUMNS:
            raise ValueError(f"{p}: expected the header {','.join(DETECTION_CSV_COLUMNS)}")
        for n, row in enumerate(rows[1:], 2):
            if not row:
                continue
            if len(row) != len(DETECTION_CSV_COLUMNS):
                raise ValueError(f"{p}:{n}: expected {len(DETECTION_CSV_COLUMNS)} columns, got {len(row)}")
            vid, s, e, label, score = row
            try:
                det = {"start": float(s), "end": float(e), "label": label, "score": float(score)}
            except ValueError:
                raise ValueError(f"{p}:{n}: video {vid}: start, end and score must be numbers") from None
            out.setdefault(vid, []).append(det)
    else:
        data = _load_json(p)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, dict):
            raise ValueError(f"{p}: not an ActivityNet submission with a 'results' object")
        for vid, dets in results.items():
            if not isinstance(dets, list):
                raise ValueError(f"{p}: video {vid}: expected a list of detections")
            out[vid] = []
            for k, d in enumerate(dets):
                seg = d.get("segment") if isinstance(d, dict) else None
                if not isinstance(seg, list | tuple) or len(seg) != 2 or "label" not in d or "score" not in d:
                    raise ValueError(f"{p}: video {vid}: detection {k} needs 'segment': [start, end], label, score")
                try:
                    det = {
                        "start": float(seg[0]),
                        "end": float(seg[1]),
                        "label": d["label"],
                        "score": float(d["score"]),
                    }
                except (TypeError, ValueError):
                    raise ValueError(f"{p}: video {vid}: detection {k}: segment and score must be numbers") from None
                out[vid].append(det)
    _checked_detections(out, classes, f"{p}: ")
    return out


def write_classifications(
    path: str | os.PathLike[str],
    video_scores: Mapping[str, Any],
    class_names: Sequence[str],
    *,
    top_n: int | None = None,
    version: str = SUBMISSION_VERSION,
    external_data: Mapping[str, Any] | None = None,
) -> Path:
    """Untrimmed classification results in the official submission layout ``{"version", "results": {id:
    [{"label", "score"}]}, "external_data"}``: per video its classes by decreasing score (the ``top_n`` best)."""
    results = {}
    for vid, s in video_scores.items():
        s = np.asarray(s, dtype=np.float64)
        if s.shape != (len(class_names),):
            raise ValueError(f"video {vid}: scores must be ({len(class_names)},), got shape {s.shape}")
        order = np.argsort(-s, kind="stable")[: top_n if top_n is not None else len(s)]
        results[vid] = [{"label": class_names[i], "score": float(s[i])} for i in order]
    ext = dict(external_data) if external_data is not None else {"used": False, "details": ""}
    return atomic_write_json(Path(path), {"version": version, "results": results, "external_data": ext}, indent=None)
