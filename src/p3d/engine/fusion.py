"""Late fusion of two-stream predictions (Simonyan & Zisserman 2014; TSN): RGB and optical-flow video scores.

Each stream is tested on its own (:func:`p3d.engine.evaluate.evaluate_videos`: 20 clips, softmax scores averaged
per video); the fused score of a video is the weighted average of the streams' averaged softmax scores,
``(w_rgb · s_rgb + w_flow · s_flow) / (w_rgb + w_flow)`` (default 1:1; TSN used 1:1.5), over the videos both
streams could read (joined by video id).  A stream's result can be saved (``scores.npz``, every class's score for
every video, what ``p3d test`` writes) and fused later without running its model again.

Public API::

    fuse_results({"rgb": EvalResult, "flow": EvalResult}, weights={"rgb": 1.0, "flow": 1.0}) -> EvalResult
    save_scores(result, path, modality="rgb") -> path;  load_scores(path) -> (EvalResult, modality)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from p3d.engine.evaluate import EvalResult
from p3d.errors import StorageError
from p3d.fileio import atomic_path

__all__ = ["fuse_results", "load_scores", "save_scores"]

_FORMAT = "p3d-video-scores/1"


def fuse_results(results: dict[str, EvalResult], weights: dict[str, float] | None = None) -> EvalResult:
    """The weighted average of the streams' ``(V, K)`` video scores over the videos every stream scored.

    ``results`` maps a stream name to its result (same class list, in the same order); ``weights`` one
    non-negative weight per stream (default 1 each, not all 0).  The fused result has no clip-level hits (clips of
    different streams are not paired): ``clip_hit@1`` is NaN.  A video unreadable in any stream is listed in
    ``failed`` with that stream's reason; a video scored by one stream only is listed as missing from the other.
    """
    if len(results) < 2:
        raise ValueError(f"fusion needs at least two streams, got {list(results)}")
    weights = {k: 1.0 for k in results} if weights is None else dict(weights)
    if set(weights) != set(results):
        raise ValueError(f"fusion weights {sorted(weights)} do not match the streams {sorted(results)}")
    for k, w in weights.items():
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"fusion weight of the {k} stream must be a finite number >= 0, got {w}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("fusion weights are all 0")
    names = list(results)
    first = results[names[0]]
    for k in names[1:]:
        if list(results[k].classes) != list(first.classes):
            raise ValueError(
                f"the {k} stream has classes {list(results[k].classes)[:5]}..., the {names[0]} stream "
                f"{list(first.classes)[:5]}...: streams must share one class list"
            )
    rows = {k: {vid: i for i, vid in enumerate(r.video_ids)} for k, r in results.items()}
    common = [vid for vid in first.video_ids if all(vid in rows[k] for k in names)]
    failed: dict[str, str] = {}
    for k, r in results.items():
        failed.update({p: f"{k} stream: {why}" for p, why in r.failed.items()})
        for vid, i in rows[k].items():
            if any(vid not in rows[o] for o in names):
                missing = [o for o in names if vid not in rows[o]]
                failed.setdefault(r.paths[i], f"not scored by the {', '.join(missing)} stream")
    k_classes = len(first.classes)
    scores = np.zeros((len(common), k_classes), np.float64)
    for k, r in results.items():
        if weights[k]:
            idx = [rows[k][vid] for vid in common]
            scores += weights[k] * r.scores[idx].astype(np.float64)
    scores /= total
    i0 = [rows[names[0]][vid] for vid in common]
    return EvalResult(
        classes=list(first.classes),
        video_ids=common,
        paths=[first.paths[i] for i in i0],
        labels=[first.labels[i] for i in i0],
        scores=scores.astype(np.float32),
        clip_hits=0,
        num_clips=0,
        failed=failed,
        seconds=sum(r.seconds for r in results.values()),
    )


def save_scores(result: EvalResult, path: str | os.PathLike[str], modality: str = "rgb") -> Path:
    """Write ``result`` (every class's averaged score per video, labels, failures) as ``.npz``, atomically."""
    path = Path(path)
    header = {
        "format": _FORMAT,
        "modality": modality,
        "classes": list(result.classes),
        "video_ids": list(result.video_ids),
        "paths": list(result.paths),
        "labels": [list(lab) for lab in result.labels],
        "clip_hits": int(result.clip_hits),
        "num_clips": int(result.num_clips),
        "failed": dict(result.failed),
        "seconds": float(result.seconds),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, scores=np.asarray(result.scores, np.float32), header=np.array(json.dumps(header)))
    return path


def load_scores(path: str | os.PathLike[str]) -> tuple[EvalResult, str]:
    """A result written by :func:`save_scores` and its stream's modality; a clear error for anything else."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            scores = z["scores"]
            header = json.loads(str(z["header"]))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: scores file not found") from None
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a scores file written by p3d test ({e})") from None
    if header.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a scores file written by p3d test (format {header.get('format')!r})")
    if scores.shape != (len(header["video_ids"]), len(header["classes"])):
        raise StorageError(path, f"scores of shape {scores.shape} for {len(header['video_ids'])} videos")
    result = EvalResult(
        classes=header["classes"],
        video_ids=header["video_ids"],
        paths=header["paths"],
        labels=[tuple(lab) for lab in header["labels"]],
        scores=scores,
        clip_hits=header["clip_hits"],
        num_clips=header["num_clips"],
        failed=header["failed"],
        seconds=header["seconds"],
    )
    return result, header["modality"]
