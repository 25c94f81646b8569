"""Scanning a dataset for unreadable and too-short videos, with summary statistics (``p3d check-data``).

Public API::

    check_samples(samples, min_frames=16, workers=1) -> CheckReport
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from p3d.data.datasets import Sample, SampleList
from p3d.data.video import VideoInfo, VideoReader
from p3d.errors import VideoReadError


@dataclass
class CheckReport:
    """Per-dataset findings: ``bad`` maps a path to its reason (unreadable or too short)."""

    classes: list[str]
    total: int
    good: list[Sample] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)
    infos: dict[str, VideoInfo] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts, class sizes, duration / frame-count / fps statistics and the commonest resolutions."""
        infos = list(self.infos.values())
        durations = [i.duration for i in infos]
        frames = [i.num_frames for i in infos]
        per_class = Counter(self.classes[lab] for s in self.good for lab in s.labels)

        def stats(xs: list[float]) -> dict[str, float]:
            if not xs:
                return {}
            return {"min": min(xs), "median": statistics.median(xs), "mean": statistics.fmean(xs), "max": max(xs)}

        return {
            "samples": self.total,
            "good": len(self.good),
            "bad": len(self.bad),
            "missing_from_disk": len(self.missing),
            "classes": len(self.classes),
            "samples_per_class": {c: per_class.get(c, 0) for c in self.classes},
            "duration_s": stats(durations),
            "frames": stats(frames),
            "fps": dict(Counter(round(i.fps, 2) for i in infos).most_common(5)),
            "resolutions": {f"{w}x{h}": n for (w, h), n in Counter((i.width, i.height) for i in infos).most_common(8)},
            "codecs": dict(Counter(i.codec for i in infos).most_common()),
        }


def _probe(args: tuple[str, bool]) -> tuple[str, VideoInfo | None, str | None]:
    path, full = args
    try:
        with VideoReader(path) as r:
            info = r.info
            if full:
                n = sum(1 for _ in r.iter_frames(size=(16, 16)))
                if n < r.num_frames:
                    return path, info, f"only {n} of {r.num_frames} frames decode"
            elif r.num_frames > 1:
                r.get_frames([r.num_frames // 2, r.num_frames - 1], size=(16, 16))
                if r.last_missing:
                    return path, info, "frames near the middle/end do not decode"
        return path, info, None
    except VideoReadError as e:
        return path, None, e.reason


def check_samples(
    samples: SampleList,
    min_frames: int = 16,
    workers: int = 1,
    full_decode: bool = False,
    progress: bool = False,
) -> CheckReport:
    """Open every video of ``samples`` (first, middle and last frames decoded; every frame with
    ``full_decode``) and flag unreadable ones and samples (or segments) shorter than ``min_frames``."""
    paths = sorted({s.path for s in samples})
    jobs = [(p, full_decode) for p in paths]
    if workers > 1 and len(jobs) > 1:
        ctx = mp.get_context("fork" if os.name == "posix" else "spawn")
        with ctx.Pool(workers) as pool:
            results = list(_maybe_progress(pool.imap_unordered(_probe, jobs, chunksize=8), len(jobs), progress))
    else:
        results = list(_maybe_progress(map(_probe, jobs), len(jobs), progress))
    report = CheckReport(classes=list(samples.classes), total=len(samples), missing=list(samples.missing))
    for path, info, reason in results:
        if info is not None:
            report.infos[path] = info
        if reason is not None:
            report.bad[path] = reason
    for s in samples:
        if s.path in report.bad:
            continue
        info = report.infos[s.path]
        n = info.num_frames
        if s.start is not None or s.end is not None:
            start = s.start or 0.0
            end = info.duration if s.end is None else min(s.end, info.duration)
            n = int(round(max(end - start, 0.0) * info.fps))
        if n < min_frames:
            what = "segment" if s.start is not None or s.end is not None else "video"
            report.bad.setdefault(
                s.path if what == "video" else f"{s.path}@{s.start}-{s.end}",
                f"too short: {what} has {n} frames < {min_frames}",
            )
            continue
        report.good.append(s)
    return report


def _maybe_progress(it, total: int, progress: bool):
    if not progress:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, unit="video")
