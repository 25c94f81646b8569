"""Dense windows along a long (untrimmed) video: where they lie, and how they are cut from one pass of the decoder.

Layout (pure functions of the frame count and the frame timestamps; :func:`window_layout`):

* Window ``k`` starts at frame ``s_k = k * stride`` and takes the model's clip from there (its
  :class:`~p3d.spec.InputSpec`): frames ``s_k + j * frame_stride`` for ``j < clip_len``.  It *spans*
  ``window = clip_len * frame_stride`` frames, ``[s_k, s_k + window)`` (each sampled frame stands for
  ``frame_stride`` frames).  ``stride < window``: windows overlap; ``stride > window``: gaps between them.
* Which windows (``last``): ``"pad"`` (the default) adds windows while their start lies in the video and the
  previous window ended before the video did, so the whole video is covered; the last window may run past the end
  and repeats the last frame there.  ``"drop"`` keeps only the windows that fit (``s_k + window <= F``; frames after
  the last one are not covered).  A video shorter than one window gives one window from frame 0 with its last frame
  repeated (both policies).
* Times, in seconds from the video's first frame, come from the frames' presentation timestamps (exact with a
  variable frame rate): window ``k`` is ``[t(s_k), t(s_k + window)]``, ``t(i)`` being frame ``i``'s timestamp and,
  past the last frame, the video's end ``t(F-1) + (t(F-1) - t(F-2))`` (the last frame lasts as long as the one
  before it; ``1 / fps`` for a one-frame video).  A padded window therefore ends where the video ends.
  A sample with a segment (``Sample.start``/``end``) is cut in the same way inside the segment's frames; its
  times stay relative to the file's first frame.

Decoding (:func:`iter_video_windows`): the file is decoded once, front to back
(:meth:`p3d.data.video.VideoReader.iter_indexed_frames`; no seek per window), each frame resized by the decoder to
``spec.resize`` and centre-cropped to ``spec.size`` (the test protocol of Sec. 4.1).  :func:`assemble_windows`
keeps only the frames a window not yet complete needs (at most ``window`` frames, whatever the video's length)
and hands out each window as soon as its last frame is decoded; windows leave in chunks of ``chunk`` windows, so
an hour-long video never holds more than a chunk of clips.  A frame that fails to decode is replaced by the one
before it (at the very start: the next one); after the last decodable frame the last one is repeated.

:class:`DenseWindowsDataset` runs this in DataLoader workers (one video per worker at a time); its items are the
chunks, uint8 ``(n, T, h, w, 3)`` as :func:`p3d.data.transforms.to_model_input` expects.

Public API::

    window_starts(num_frames, stride, window, last="pad") -> (K,) int64
    window_indices(starts, clip_len, frame_stride, num_frames) -> (K, clip_len) int64
    window_times(starts, window, frame_times, end) -> (K, 2) float64
    window_layout(frame_times, spec, stride, last="pad", segment=None, fps=25.0) -> WindowLayout
    assemble_windows(indexed_frames, indices) -> Iterator[(k, (T, h, w, 3) uint8)]
    iter_video_windows(path, spec, stride, ...) -> Iterator[WindowChunk]
    DenseWindowsDataset(samples, spec, stride=16, ...)  # IterableDataset of chunks
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from p3d.data.datasets import Sample, SampleList, _as_samples
from p3d.data.transforms import hflip_frames
from p3d.data.video import VideoReader
from p3d.errors import VideoReadError
from p3d.spec import InputSpec

log = logging.getLogger(__name__)

LAST_WINDOW_POLICIES = ("pad", "drop")
DEFAULT_STRIDE = 16  # frames between window starts: a C3D/P3D clip length, the usual ActivityNet feature step
DEFAULT_CHUNK = 16  # windows per item handed from the decoder to the model


def check_stride(stride: Any, what: str = "stride") -> int:
    """``stride`` as a positive int, or a one-line ``ValueError`` naming ``what``."""
    if isinstance(stride, bool) or not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"{what} must be a whole number of frames >= 1, got {stride!r}")
    return int(stride)


def window_starts(num_frames: int, stride: int, window: int, last: str = "pad") -> np.ndarray:
    """``(K,)`` int64 first frames of the windows of a video of ``num_frames`` frames (see the module docstring)."""
    check_stride(stride)
    check_stride(window, "window")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if last not in LAST_WINDOW_POLICIES:
        raise ValueError(f"last window policy must be one of {LAST_WINDOW_POLICIES}, got {last!r}")
    full = (num_frames - window) // stride + 1 if num_frames >= window else 0  # windows that fit
    if full == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(full, dtype=np.int64) * stride
    if last == "pad" and starts[-1] + window < num_frames:
        # the next start lies in the video (stride <= window: it is before the end of the last window, which is
        # before F; stride > window: the video has frames at or after it, or the tail is a gap) -- add it if so
        nxt = starts[-1] + stride
        if nxt < num_frames:
            starts = np.append(starts, nxt)
    return starts


def window_indices(starts: np.ndarray, clip_len: int, frame_stride: int, num_frames: int) -> np.ndarray:
    """``(K, clip_len)`` frame indices of the windows starting at ``starts``; past the end: the last frame."""
    offsets = np.arange(clip_len, dtype=np.int64) * int(frame_stride)
    return np.minimum(np.asarray(starts, dtype=np.int64)[:, None] + offsets[None], num_frames - 1)


def end_time(frame_times: np.ndarray, fps: float) -> float:
    """When the last frame stops being shown: its timestamp plus the interval before it (``1 / fps`` if alone)."""
    t = np.asarray(frame_times, dtype=np.float64)
    if len(t) >= 2 and t[-1] > t[-2]:
        return float(t[-1] + (t[-1] - t[-2]))
    return float(t[-1] + 1.0 / fps)


def window_times(starts: np.ndarray, window: int, frame_times: np.ndarray, end: float) -> np.ndarray:
    """``(K, 2)`` float64 ``[t(s_k), t(s_k + window)]`` in seconds; ``t(i)`` for ``i >= len(frame_times)`` is
    ``end`` (the end of the frames' range)."""
    t = np.append(np.asarray(frame_times, dtype=np.float64), end)
    s = np.asarray(starts, dtype=np.int64)
    return np.stack([t[np.minimum(s, len(t) - 1)], t[np.minimum(s + window, len(t) - 1)]], axis=1)


@dataclass(frozen=True)
class WindowLayout:
    """The windows of one video: ``indices`` ``(K, clip_len)`` absolute frame indices, ``times`` ``(K, 2)`` s."""

    indices: np.ndarray
    times: np.ndarray

    @property
    def num_windows(self) -> int:
        return len(self.indices)


def window_layout(
    frame_times: np.ndarray,
    spec: InputSpec,
    stride: int,
    last: str = "pad",
    segment: tuple[int, int] | None = None,
    fps: float = 25.0,
) -> WindowLayout:
    """The windows of a video whose frames are shown at ``frame_times`` (``(F,)`` seconds, sorted), for a model
    with input ``spec`` (window = ``spec.clip_len * spec.frame_stride`` frames).  ``segment``: frame range
    ``[a, b)`` to cover instead of the whole video.  ``fps`` only serves a one-frame video's duration."""
    t = np.asarray(frame_times, dtype=np.float64)
    a, b = (0, len(t)) if segment is None else segment
    if not 0 <= a < b <= len(t):
        raise ValueError(f"segment must be a frame range inside [0, {len(t)}), got {segment}")
    window = spec.clip_len * spec.frame_stride
    starts = window_starts(b - a, stride, window, last)
    end = float(t[b]) if b < len(t) else end_time(t, fps)
    return WindowLayout(
        indices=window_indices(starts, spec.clip_len, spec.frame_stride, b - a) + a,
        times=window_times(starts, window, t[a:b], end),
    )


def assemble_windows(frames: Iterable[tuple[int, np.ndarray]], indices: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Cut windows from a stream of frames: ``frames`` yields ``(index, frame)`` in increasing index order (gaps
    allowed), ``indices`` ``(K, T)`` says which frames make window ``k`` (rows in order of their first frame).
    Yields ``(k, (T, ...) array)`` in order, each as soon as its last frame has arrived, and stops reading
    ``frames`` after the last window's last frame.

    Memory: only frames that a window not yet handed out needs are kept, so at most one window's span.  A missing
    index takes the frame before it (before the first frame: the first one); indices after the last frame the
    stream gives take the last one.  Raises ``ValueError`` if the stream gives no frame at all."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2 or len(idx) == 0 or idx.shape[1] == 0:
        raise ValueError(f"indices must be (K, T) with K, T >= 1, got shape {idx.shape}")
    wanted = np.unique(idx)
    first, last = idx.min(axis=1), idx.max(axis=1)
    if np.any(np.diff(first) < 0):
        raise ValueError("windows must be in order of their first frame")
    buffer: dict[int, np.ndarray] = {}
    k, p, prev, prev_i = 0, 0, None, -1

    def ready(upto: float) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal k
        while k < len(idx) and last[k] <= upto:
            yield k, np.stack([buffer[int(j)] for j in idx[k]])
            k += 1
            lo = first[k] if k < len(idx) else np.iinfo(np.int64).max
            for j in [j for j in buffer if j < lo]:
                del buffer[j]

    for i, img in frames:
        if i <= prev_i:
            continue
        while p < len(wanted) and wanted[p] <= i:
            j = int(wanted[p])
            buffer[j] = img if j == i or prev is None else prev
            p += 1
        prev, prev_i = img, int(i)
        yield from ready(prev_i)
        if k == len(idx):
            return
    if prev is None:
        raise ValueError("no frame could be decoded")
    if p < len(wanted):
        log.debug("the stream ended at frame %d; %d later frame(s) repeat it", prev_i, len(wanted) - p)
    while p < len(wanted):
        buffer[int(wanted[p])] = prev
        p += 1
    yield from ready(np.inf)


@dataclass
class WindowChunk:
    """Consecutive windows ``first .. first + n - 1`` of a video of ``total`` windows: ``frames`` ``(n, T, h, w, 3)``
    uint8, ``times`` ``(n, 2)`` seconds."""

    first: int
    total: int
    frames: np.ndarray
    times: np.ndarray


def video_layout(reader: VideoReader, spec: InputSpec, stride: int, last: str, sample: Sample | None) -> WindowLayout:
    """:func:`window_layout` of an open video (inside ``sample``'s segment, if it has one)."""
    segment = None
    if sample is not None and (sample.start is not None or sample.end is not None):
        segment = reader.frame_range(sample.start, sample.end)
    return window_layout(reader.frame_times(), spec, stride, last, segment, fps=reader.fps)


def iter_video_windows(
    path: str | os.PathLike[str],
    spec: InputSpec,
    stride: int = DEFAULT_STRIDE,
    *,
    last: str = "pad",
    sample: Sample | None = None,
    chunk: int = DEFAULT_CHUNK,
    threads: int = 1,
) -> Iterator[WindowChunk]:
    """The windows of one video file in chunks of ``chunk``, from one pass of the decoder (module docstring).
    Raises :class:`~p3d.errors.VideoReadError` for an unreadable file."""
    check_stride(chunk, "chunk")
    (rh, rw), (h, w) = spec.resize, spec.size
    if h > rh or w > rw:
        raise ValueError(f"crop size {spec.size} is larger than the resize target {spec.resize}")
    top, left = (rh - h) // 2, (rw - w) // 2
    with VideoReader(path, threads=threads) as r:
        layout = video_layout(r, spec, stride, last, sample)
        frames = ((i, img[top : top + h, left : left + w]) for i, img in r.iter_indexed_frames(size=spec.resize))
        pending: list[np.ndarray] = []
        first = 0
        try:
            for _, clip in assemble_windows(frames, layout.indices):
                pending.append(clip)
                if len(pending) == chunk:
                    yield WindowChunk(first, layout.num_windows, np.stack(pending), layout.times[first : first + chunk])
                    first += chunk
                    pending = []
        except ValueError as e:
            raise VideoReadError(path, str(e)) from None
        if pending:
            yield WindowChunk(first, layout.num_windows, np.stack(pending), layout.times[first:])


class DenseWindowsDataset(IterableDataset):
    """The dense windows of many videos, as chunks: each DataLoader worker takes every ``num_workers``-th video and
    decodes it once (:func:`iter_video_windows`).

    Items are dicts ``{video_index, first, total, windows, times, valid, error}``: ``windows`` uint8
    ``(n, T, h, w, 3)`` (``flip``: followed by their horizontal mirrors, ``2n`` rows), ``times`` ``(n, 2)`` seconds,
    windows ``first .. first + n - 1`` of ``total``.  A video that cannot be read gives one item with
    ``valid=False`` and the reason in ``error`` (possibly after some chunks, if it fails midway) — never fatal.
    Chunks of one video come in order; chunks of different videos interleave across workers.
    """

    def __init__(
        self,
        samples: SampleList | Sequence[Sample],
        spec: InputSpec,
        *,
        stride: int = DEFAULT_STRIDE,
        last: str = "pad",
        chunk: int = DEFAULT_CHUNK,
        flip: bool = False,
        threads: int = 1,
    ) -> None:
        check_stride(stride)
        check_stride(chunk, "chunk")
        if last not in LAST_WINDOW_POLICIES:
            raise ValueError(f"last window policy must be one of {LAST_WINDOW_POLICIES}, got {last!r}")
        self.samples = _as_samples(samples)[0]
        self.spec, self.stride, self.last = spec, stride, last
        self.chunk, self.flip, self.threads = chunk, flip, threads

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for v in range(worker, len(self.samples), workers):
            yield from self._video(v)

    def _video(self, v: int) -> Iterator[dict[str, Any]]:
        s = self.samples[v]
        try:
            if not os.path.exists(s.path):
                raise VideoReadError(s.path, "file not found")
            for c in iter_video_windows(
                s.path, self.spec, self.stride, last=self.last, sample=s, chunk=self.chunk, threads=self.threads
            ):
                x = torch.from_numpy(c.frames)
                if self.flip:
                    x = torch.cat([x, hflip_frames(x, self.spec)])
                yield {
                    "video_index": v,
                    "first": c.first,
                    "total": c.total,
                    "windows": x,
                    "times": c.times,
                    "valid": True,
                    "error": "",
                }
        except Exception as e:  # noqa: BLE001 - any failure of one video is reported, never fatal to the run
            reason = e.reason if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"
            log.warning("unreadable video %s: %s", s.path, reason)
            yield {
                "video_index": v,
                "first": -1,
                "total": 0,
                "windows": None,
                "times": None,
                "valid": False,
                "error": reason,
            }
