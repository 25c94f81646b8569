"""Timelines of untrimmed videos: per-window class scores, their smoothed curves, the detected segments, and files.

``p3d predict --timeline`` writes one timeline per video and ``p3d localize`` reads them back (or builds them from a
dense feature store).  Detection (:class:`DetectionParams`, applied by
:func:`p3d.evaluation.localization.detect_segments`):

1. window scores are class probabilities (softmax of the classifier, ``prob``), one row per window;
2. each class's curve is smoothed with a centred mean over ``smoothing`` windows (default 5);
3. a class is "on" in a window where its smoothed score is ``>= threshold`` (default 0.5: with softmax scores at
   most one class is on at a time); each run of "on" windows is a segment, scored with the mean smoothed score over
   the run.  A window's score stands for the time nearer its centre than any other window's (:func:`window_cells`:
   from the midpoint with the previous window's centre to the midpoint with the next one's; the first and last
   windows reach the video's start and end), so overlapping windows of 32 frames every 4 locate an action to about
   4 frames, not 32;
4. segments shorter than ``min_duration`` seconds (default 0) are dropped, and hard temporal NMS at tIoU
   ``nms_iou`` (default 0.5) runs per class.

Files of a timeline named ``NAME`` (:func:`write_timeline`, all written atomically)::

    NAME.json           {"video", "class_names", "window_times" (W, 2), "scores" (W, K), "smoothed" (W, K),
                         "segments": [{"start", "end", "label", "score"}], "params"}
    NAME.windows.csv    start,end,<class>...,smoothed:<class>...   one row per window
    NAME.segments.csv   start,end,label,score                      by decreasing score
    NAME.png            classes down, time across: raw and smoothed scores, segments outlined (and ground truth)
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p3d.evaluation.localization import SMOOTHING_METHODS, detect_segments, smooth_scores
from p3d.fileio import atomic_write_json, atomic_write_text

TIMELINE_FORMAT = "p3d-timeline"
PLOT_MAX_CLASSES = 12  # rows of a timeline plot: the classes with segments or ground truth, then the highest peaks


@dataclass(frozen=True)
class DetectionParams:
    """How segments are read off per-window scores (module docstring); :meth:`check` validates every value."""

    threshold: float = 0.5
    smoothing: int = 5
    smoothing_method: str = "mean"
    nms_iou: float | None = 0.5
    min_duration: float = 0.0

    def check(self) -> DetectionParams:
        """``self``, or a one-line ``ValueError`` naming the bad value."""
        if not (isinstance(self.threshold, int | float) and 0.0 <= self.threshold <= 1.0):
            raise ValueError(f"threshold must be a score in [0, 1], got {self.threshold!r}")
        if isinstance(self.smoothing, bool) or not isinstance(self.smoothing, int) or self.smoothing < 1:
            raise ValueError(f"smoothing must be an odd number of windows >= 1, got {self.smoothing!r}")
        if self.smoothing % 2 == 0:
            raise ValueError(f"smoothing must be an odd number of windows >= 1, got {self.smoothing}")
        if self.smoothing_method not in SMOOTHING_METHODS:
            raise ValueError(f"smoothing method must be one of {SMOOTHING_METHODS}, got {self.smoothing_method!r}")
        if self.nms_iou is not None and not 0.0 <= self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be a tIoU in [0, 1], got {self.nms_iou!r}")
        d = self.min_duration
        if not (isinstance(d, int | float) and math.isfinite(d) and d >= 0):
            raise ValueError(f"min_duration must be >= 0 seconds, got {self.min_duration!r}")
        return self


@dataclass
class Timeline:
    """One video's timeline: ``window_times`` ``(W, 2)`` s, ``scores`` and ``smoothed`` ``(W, K)`` (column ``k`` is
    ``class_names[k]``), ``segments`` ``[{"start", "end", "label", "score"}]`` by decreasing score."""

    video: str
    class_names: list[str]
    window_times: np.ndarray
    scores: np.ndarray
    smoothed: np.ndarray
    segments: list[dict[str, Any]]
    params: DetectionParams

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TIMELINE_FORMAT,
            "video": self.video,
            "class_names": list(self.class_names),
            "window_times": self.window_times.tolist(),
            "scores": self.scores.tolist(),
            "smoothed": self.smoothed.tolist(),
            "segments": [
                {"start": float(s["start"]), "end": float(s["end"]), "label": s["label"], "score": float(s["score"])}
                for s in self.segments
            ],
            "params": asdict(self.params),
        }


def window_cells(window_times: Any) -> np.ndarray:
    """``(W, 2)`` the time each window's score stands for: between the midpoints of its centre with its neighbours'
    (the first from its start, the last to its end); the cells tile ``[first start, last end]``."""
    t = np.asarray(window_times, dtype=np.float64)
    if t.ndim != 2 or t.shape[1] != 2 or len(t) == 0:
        raise ValueError(f"window_times must be (W, 2) with W >= 1, got shape {t.shape}")
    c = t.mean(axis=1)
    edges = np.concatenate([[t[0, 0]], (c[1:] + c[:-1]) / 2, [max(t[-1, 1], c[-1])]])
    return np.stack([edges[:-1], edges[1:]], axis=1)


def make_timeline(
    video: str,
    scores: Any,
    window_times: Any,
    class_names: Sequence[str],
    params: DetectionParams | None = None,
) -> Timeline:
    """The timeline of one video from its window ``scores`` ``(W, K)`` and ``window_times`` ``(W, 2)``."""
    p = (params or DetectionParams()).check()
    x = np.asarray(scores, dtype=np.float64)
    t = np.asarray(window_times, dtype=np.float64)
    segments = detect_segments(
        x,
        window_cells(t),
        threshold=p.threshold,
        min_duration=p.min_duration,
        nms_iou=p.nms_iou,
        smoothing=p.smoothing,
        smoothing_method=p.smoothing_method,
        class_names=list(class_names),
    )
    smoothed = smooth_scores(x, p.smoothing, p.smoothing_method)
    return Timeline(video, list(class_names), t, x, smoothed, segments, p)


def timeline_name(video: str) -> str:
    """A file-name stem for a video id (path separators and unusual characters become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", video.replace("\\", "/").replace("/", "__")).strip("._")
    return name or "video"


def _plot_classes(tl: Timeline, ground_truth: Sequence[Mapping[str, Any]]) -> list[int]:
    """Rows worth showing: classes with a segment or a ground-truth instance, then the highest smoothed peaks."""
    k = len(tl.class_names)
    if k <= PLOT_MAX_CLASSES:
        return list(range(k))
    col = {c: i for i, c in enumerate(tl.class_names)}
    keep = list(dict.fromkeys(col[a["label"]] for a in [*tl.segments, *ground_truth] if a["label"] in col))
    for c in np.argsort(-tl.smoothed.max(axis=0), kind="stable").tolist():
        if len(keep) >= PLOT_MAX_CLASSES:
            break
        if c not in keep:
            keep.append(c)
    return sorted(keep)


def plot_timeline_png(
    tl: Timeline, out: str | os.PathLike[str], ground_truth: Sequence[Mapping[str, Any]] | None = None
) -> Path:
    """:func:`p3d.evaluation.plots.plot_timeline` of ``tl`` (at most :data:`PLOT_MAX_CLASSES` rows: the classes with
    segments or ground truth, then the highest peaks), titled with the video and the detection settings."""
    from p3d.evaluation.plots import plot_timeline

    gt = list(ground_truth or ())
    rows = _plot_classes(tl, gt)
    names = [tl.class_names[i] for i in rows]
    shown = set(names)
    p = tl.params
    title = (
        f"{tl.video}: threshold {p.threshold:g}, smoothing {p.smoothing} ({p.smoothing_method}), NMS tIoU "
        f"{p.nms_iou if p.nms_iou is not None else 'off'}"
    )
    return plot_timeline(
        tl.window_times,
        tl.scores[:, rows],
        names,
        out,
        segments=[s for s in tl.segments if s["label"] in shown],
        ground_truth=[g for g in gt if g["label"] in shown],
        smoothed=tl.smoothed[:, rows],
        title=title,
    )


def write_timeline(
    tl: Timeline,
    out_dir: str | os.PathLike[str],
    name: str | None = None,
    *,
    ground_truth: Sequence[Mapping[str, Any]] | None = None,
    plot: bool = True,
) -> dict[str, Path]:
    """Write ``NAME.json``, ``NAME.windows.csv``, ``NAME.segments.csv`` and (``plot``) ``NAME.png`` into ``out_dir``
    (created); ``name`` defaults to :func:`timeline_name` of the video.  Returns the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = name or timeline_name(tl.video)
    paths = {"json": atomic_write_json(out / f"{stem}.json", tl.to_dict(), indent=None)}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["start", "end", *tl.class_names, *(f"smoothed:{c}" for c in tl.class_names)])
    for (a, b), s, m in zip(tl.window_times, tl.scores, tl.smoothed, strict=True):
        w.writerow([repr(float(a)), repr(float(b)), *(repr(float(v)) for v in s), *(repr(float(v)) for v in m)])
    paths["windows_csv"] = atomic_write_text(out / f"{stem}.windows.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["start", "end", "label", "score"])
    for s in tl.segments:
        w.writerow([repr(float(s["start"])), repr(float(s["end"])), s["label"], repr(float(s["score"]))])
    paths["segments_csv"] = atomic_write_text(out / f"{stem}.segments.csv", buf.getvalue())
    if plot:
        paths["png"] = plot_timeline_png(tl, out / f"{stem}.png", ground_truth)
    return paths


def is_timeline(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a timeline ``.json`` (read from its first bytes: ``{"format": "p3d-timeline", ...``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.startswith(b'{"format": "' + TIMELINE_FORMAT.encode() + b'"')


def read_timeline(path: str | os.PathLike[str]) -> Timeline:
    """A timeline ``.json`` written by :func:`write_timeline` (segments as stored; call :func:`make_timeline` on its
    scores to detect again with other parameters)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: timeline file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(d, dict) or d.get("format") != TIMELINE_FORMAT:
        raise ValueError(f"{p}: not a p3d timeline (format {d.get('format') if isinstance(d, dict) else None!r})")
    try:
        scores = np.asarray(d["scores"], dtype=np.float64)
        times = np.asarray(d["window_times"], dtype=np.float64)
        smoothed = np.asarray(d["smoothed"], dtype=np.float64)
        names = [str(c) for c in d["class_names"]]
        params = DetectionParams(**d["params"])
        segments = [dict(s) for s in d["segments"]]
        video = str(d["video"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{p}: malformed timeline ({type(e).__name__}: {e})") from None
    if scores.ndim != 2 or scores.shape[1] != len(names) or times.shape != (len(scores), 2):
        raise ValueError(f"{p}: scores {scores.shape}, window times {times.shape} and {len(names)} classes disagree")
    return Timeline(video, names, times, scores, smoothed, segments, params)


# ---------------------------------------------------------------------------------------------------------
# Localisation of a collection, scored as ActivityNet scores it
# ---------------------------------------------------------------------------------------------------------
def match_video_ids(ids: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    """``{id: ground-truth id}`` for the ``ids`` that name a video of ``known``: the id itself, else its file name
    without a video extension (the part after the last ``/``), else that name without ActivityNet's ``v_`` file
    prefix (``p3d extract`` names ``videos/v_abc.mp4`` ``v_abc``, the annotations call it ``abc``).  Ids matching
    nothing are left out."""
    from p3d.data.video import normalize_id

    have = set(known)
    out: dict[str, str] = {}
    for vid in ids:
        base = normalize_id(vid).rsplit("/", 1)[-1]
        for cand in (vid, base, base[2:] if base.startswith("v_") else None):
            if cand is not None and cand in have:
                out[vid] = cand
                break
    return out


@dataclass
class LocalizationResult:
    """What :func:`evaluate_localization` found and scored.

    ``detection``: ActivityNet detection AP (``ap`` ``(T, C)``, ``mAP`` per tIoU, ``average_mAP``);
    ``classification``: untrimmed-video classification (hit@1, hit@3, mAP) of the pooled window scores;
    ``timelines``/``detections``/``video_scores`` by ground-truth video id (``video_scores`` columns:
    ``scored_classes``); ``unscored_classes``: score columns that are no class of the ground truth (their segments
    are dropped); ``outside``: input videos not in the ground truth's subset (left out); ``missing``: videos of the
    subset without scores (each of their instances is a miss)."""

    detection: Any
    classification: Any
    timelines: dict[str, Timeline]
    detections: dict[str, list[dict[str, Any]]]
    video_scores: dict[str, np.ndarray]
    scored_classes: list[str]
    unscored_classes: list[str]
    outside: list[str]
    missing: list[str]
    pooling: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "detection": self.detection.as_dict(),
            "classification": self.classification.as_dict(),
            "videos": len(self.timelines),
            "pooling": self.pooling,
            "scored_classes": self.scored_classes,
            "unscored_classes": self.unscored_classes,
            "outside_subset": self.outside,
            "missing": self.missing,
        }


def evaluate_localization(
    window_scores: Mapping[str, tuple[Any, Any]],
    class_names: Sequence[str],
    ground_truth: Any,
    params: DetectionParams | None = None,
    *,
    pooling: str = "mean",
    pooling_k: int | None = None,
    top_k: Sequence[int] = (1, 3),
) -> LocalizationResult:
    """Temporal localisation and untrimmed classification of videos from their window scores.

    ``window_scores``: video id -> ``(scores (W, K), window_times (W, 2))``, column ``k`` being class
    ``class_names[k]`` (class probabilities, e.g. a dense store's ``prob``); ids are matched to the ground truth's
    with :func:`match_video_ids`.  ``ground_truth``: :class:`p3d.evaluation.localization.GroundTruth` (e.g.
    :func:`~p3d.evaluation.localization.read_ground_truth` of an ActivityNet v1.3 JSON).  Segments come from
    :func:`make_timeline` with ``params``; their AP at tIoU 0.5:0.05:0.95 and the mean over the thresholds follow
    the official evaluation (:func:`~p3d.evaluation.localization.evaluate_detection`).  Each video's class scores
    for classification are its window scores pooled over time (:func:`~p3d.evaluation.localization.
    pool_window_scores`, ``pooling`` mean/max/topk).
    """
    from p3d.evaluation.localization import evaluate_detection, evaluate_video_classification, pool_window_scores

    params = (params or DetectionParams()).check()
    names = [str(c) for c in class_names]
    known = set(ground_truth.classes)
    scored = [c for c in names if c in known]
    if not scored:
        raise ValueError(
            f"none of the {len(names)} score columns ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''}) "
            "is a class of the ground truth"
        )
    columns = [names.index(c) for c in scored]
    ids = match_video_ids(list(window_scores), list(ground_truth.segments))
    outside = sorted(v for v in window_scores if v not in ids)
    timelines: dict[str, Timeline] = {}
    detections: dict[str, list[dict[str, Any]]] = {}
    video_scores: dict[str, np.ndarray] = {}
    for vid, gid in ids.items():
        if gid in timelines:
            raise ValueError(f"two inputs name the ground-truth video {gid!r} (one is {vid!r})")
        scores, times = window_scores[vid]
        tl = make_timeline(gid, scores, times, names, params)
        timelines[gid] = tl
        detections[gid] = [s for s in tl.segments if s["label"] in known]
        video_scores[gid] = pool_window_scores(tl.scores, pooling, pooling_k)[columns]
    missing = sorted(v for v in ground_truth.segments if v not in timelines)
    return LocalizationResult(
        detection=evaluate_detection(ground_truth, detections),
        classification=evaluate_video_classification(ground_truth, video_scores, scored, top_k=top_k),
        timelines=timelines,
        detections=detections,
        video_scores=video_scores,
        scored_classes=scored,
        unscored_classes=[c for c in names if c not in known],
        outside=outside,
        missing=missing,
        pooling=pooling,
    )
