"""Reading video files with PyAV (FFmpeg): probe, frame-accurate random access, rotation.

Frames are addressed by their *index* in presentation order (0 = first displayed frame), which is exact for
variable-frame-rate files, B-frames, non-zero start times and a video stream that is not the first stream:
on open the reader demuxes the video stream once (packets only, no decoding) and sorts the packet timestamps.
That index is cached per process (keyed by path, size and mtime), so sampling many clips of one file pays
for it once.

Random access seeks to the key frame at or before the first wanted frame and decodes forward, converting
only the wanted frames to RGB (and resizing them in the same FFmpeg ``swscale`` call, which is far cheaper
than resizing afterwards).  When seeking is unreliable (the decoder lands after the target, or the
container has no timestamps) the reader falls back to decoding from the start and counting frames.

Damaged streams yield the frames that decode: a packet that fails to decode is skipped, and a wanted frame
that could not be decoded is replaced by the nearest decoded one (``VideoReader.last_missing`` counts them).
Unreadable input raises :class:`p3d.errors.VideoReadError` naming the file and the reason.

Public API::

    probe_video(path) -> VideoInfo
    read_video(path, indices=None, size=None) -> np.ndarray  # (T, H, W, 3) uint8 RGB
    VideoReader(path).get_frames(indices, size=None) -> np.ndarray  # (T, H, W, 3) uint8 RGB
    VideoReader(path).iter_indexed_frames(size=None) -> Iterator[(index, (H, W, 3) uint8 RGB)]  # one pass
"""

from __future__ import annotations

import bisect
import logging
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from p3d.errors import VideoReadError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (
    ".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".gif", ".3gp", ".ts",
    ".ogv", ".mts", ".m2ts", ".asf", ".vob", ".divx", ".xvid", ".y4m", ".nut",
)  # fmt: skip


# Flow files written by ``p3d flow`` (:mod:`p3d.data.flowfile`): ``<video id>.flow.mkv``.
FLOW_SUFFIX = ".flow.mkv"


def normalize_id(s: str) -> str:
    """Canonical video id: POSIX separators, no leading ``./``, video extension (or ``.flow.mkv``) removed.

    ``p3d extract`` names videos this way (path relative to the input folder), so ids in split lists written
    as ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi`` match the features of that file.
    """
    s = s.strip().replace("\\", "/")
    while s.startswith("./"):
        s = s[2:]
    low = s.lower()
    if low.endswith(FLOW_SUFFIX):
        return s[: -len(FLOW_SUFFIX)]
    for ext in VIDEO_EXTENSIONS:
        if low.endswith(ext):
            return s[: -len(ext)]
    return s


# swscale interpolation used when resizing while converting to RGB.
DEFAULT_INTERPOLATION = "BILINEAR"
# A wanted frame at most this many frames after the last one is reached by decoding on rather than by seeking (the
# 20 overlapping test clips want every frame: with a 12-frame GOP that was a seek and a decoder flush per GOP).
_DECODE_ON_FRAMES = 4


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file.

    ``width``/``height`` are the *displayed* size (rotation metadata applied).  ``num_frames`` counts the
    frames in presentation order (packets of the video stream); ``duration`` is in seconds from the first
    frame to the end of the last one; ``fps`` is the average rate.
    """

    path: str
    width: int
    height: int
    num_frames: int
    fps: float
    duration: float
    codec: str
    pix_fmt: str
    rotation: int
    stream_index: int
    start_time: float


@dataclass
class _FrameIndex:
    pts: np.ndarray  # (F,) int64 sorted presentation timestamps, in stream time base
    keyframes: list[int]  # sorted pts of key frames
    time_base: float
    sequential: bool  # no usable timestamps: frames are found by counting from the start


_INDEX_CACHE: OrderedDict[tuple[str, int, int], _FrameIndex] = OrderedDict()
_INDEX_CACHE_SIZE = 1024


def _check_file(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoReadError(path, "file not found") from None
    except OSError as e:
        raise VideoReadError(path, f"cannot stat file ({e.strerror})") from None
    if not os.path.isfile(path):
        raise VideoReadError(path, "not a regular file")
    if st.st_size == 0:
        raise VideoReadError(path, "empty file (0 bytes)")
    return st


def _pick_video_stream(container: av.container.InputContainer, path: str) -> av.video.stream.VideoStream:
    """The first video stream that is not an attached picture (cover art)."""
    candidates = [s for s in container.streams.video if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not candidates:
        kinds = ", ".join(f"{s.type} {s.codec_context.name}" for s in container.streams) or "none"
        raise VideoReadError(path, f"no video stream (streams: {kinds})")
    return candidates[0]


def _build_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _FrameIndex:
    pts: list[int] = []
    keys: list[int] = []
    missing_ts = False
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                missing_ts = True
                ts = len(pts)
            pts.append(ts)
            if packet.is_keyframe:
                keys.append(ts)
    except av.error.FFmpegError as e:  # truncated/damaged: keep what was demuxed
        log.debug("demux stopped early: %s", e)
    arr = np.asarray(pts, dtype=np.int64)
    sequential = missing_ts or len(np.unique(arr)) != len(arr)
    arr.sort()
    tb = float(stream.time_base) if stream.time_base else 0.0
    if tb == 0.0:
        sequential = True
    return _FrameIndex(pts=arr, keyframes=sorted(keys), time_base=tb, sequential=sequential)


def clear_index_cache() -> None:
    """Forget the cached frame indices (e.g. after rewriting files in place)."""
    _INDEX_CACHE.clear()


class VideoReader:
    """Random access to the frames of one video file.

    Use as a context manager or call :meth:`close`.  ``threads`` is the decoder's thread count (1 is best
    inside DataLoader workers, which already run in parallel; 0 lets FFmpeg choose).

    >>> with VideoReader("v.mp4") as r:
    ...     clip = r.get_frames(range(16), size=(182, 242))  # (16, 182, 242, 3) uint8
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.path = str(path)
        st = _check_file(self.path)
        try:
            self._container = av.open(self.path, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"not a readable video container ({_ffmpeg_reason(e)})") from None
        try:
            self._stream = _pick_video_stream(self._container, self.path)
            cc = self._stream.codec_context
            cc.thread_count = threads
            cc.thread_type = "SLICE" if threads == 1 else "AUTO"
            key = (self.path, st.st_size, st.st_mtime_ns)
            index = _INDEX_CACHE.get(key)
            if index is None:
                index = _build_index(self._container, self._stream)
                _INDEX_CACHE[key] = index
                if len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
                    _INDEX_CACHE.popitem(last=False)
            else:
                _INDEX_CACHE.move_to_end(key)
            self._index = index
            if len(index.pts) == 0:
                raise VideoReadError(self.path, "the video stream has no frames")
        except BaseException:
            self._container.close()
            raise
        self._rotation: int | None = None
        # one scaler context for the whole reader: VideoFrame.to_ndarray(width=...) builds a new one for every frame,
        # which costs as much as decoding the frame (BENCHMARKS.md, "GPU": 320x240 H.264 to 182x242 RGB)
        self._reformatter = av.video.reformatter.VideoReformatter()
        self.last_missing = 0

    # -- metadata ---------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(len(self._index.pts))

    @property
    def fps(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        if rate:
            return float(rate)
        span = self._span_seconds()
        return (self.num_frames - 1) / span if span > 0 else 25.0

    def _span_seconds(self) -> float:
        if self._index.sequential or self.num_frames < 2:
            return 0.0
        return float(self._index.pts[-1] - self._index.pts[0]) * self._index.time_base

    def frame_times(self) -> np.ndarray:
        """(F,) float64 presentation time of each frame in seconds, relative to the first frame."""
        if self._index.sequential:
            return np.arange(self.num_frames, dtype=np.float64) / self.fps
        return (self._index.pts - self._index.pts[0]).astype(np.float64) * self._index.time_base

    def frame_range(self, start: float | None, end: float | None) -> tuple[int, int]:
        """Frame indices ``[a, b)`` whose times (seconds from the first frame) lie in ``[start, end)``.

        Returns at least one frame (the one nearest ``start``) when the segment falls between frames.
        """
        times = self.frame_times()
        a = 0 if start is None else int(np.searchsorted(times, start - 1e-6, side="left"))
        b = self.num_frames if end is None else int(np.searchsorted(times, end - 1e-6, side="left"))
        a = min(a, self.num_frames - 1)
        return a, max(b, a + 1)

    @property
    def rotation(self) -> int:
        """Display rotation in degrees counter-clockwise (0, 90, 180 or 270), from the first frame."""
        if self._rotation is None:
            self._rotation = 0
            frames = self._decode_sequential([0], None)
            del frames
        return self._rotation

    @property
    def info(self) -> VideoInfo:
        rot = self.rotation
        cc = self._stream.codec_context
        w, h = int(cc.width), int(cc.height)
        if rot in (90, 270):
            w, h = h, w
        start = self._stream.start_time
        return VideoInfo(
            path=self.path,
            width=w,
            height=h,
            num_frames=self.num_frames,
            fps=self.fps,
            duration=self._span_seconds() + 1.0 / self.fps,
            codec=cc.name,
            pix_fmt=str(cc.format.name) if cc.format is not None else "unknown",
            rotation=rot,
            stream_index=self._stream.index,
            start_time=float(start * self._stream.time_base) if start is not None else 0.0,
        )

    # -- decoding ---------------------------------------------------------------------------------------
    def get_frames(
        self,
        indices: Sequence[int] | np.ndarray,
        size: tuple[int, int] | None = None,
        interpolation: str = DEFAULT_INTERPOLATION,
    ) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` uint8 RGB.

        ``size=(H, W)`` resizes (in the displayed orientation) during the RGB conversion; ``None`` keeps
        the displayed size.  Raises :class:`VideoReadError` if an index is out of range or no wanted frame
        could be decoded.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one frame index")
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise VideoReadError(
                self.path, f"frame index out of range [0, {self.num_frames}): {idx.min()}..{idx.max()}"
            )
        wanted = sorted(set(idx.tolist()))
        frames: dict[int, np.ndarray] = {}
        if not self._index.sequential:
            try:
                frames = self._decode_seeking(wanted, size, interpolation)
            except _SeekUnreliable as e:
                log.debug("%s: seeking unreliable (%s), decoding from the start", self.path, e)
                frames = {}
        if not frames:
            frames = self._decode_sequential(wanted, (size, interpolation))
        if not frames:
            raise VideoReadError(self.path, f"no frame could be decoded at indices {wanted[0]}..{wanted[-1]}")
        self.last_missing = sum(1 for i in wanted if i not in frames)
        if self.last_missing:
            got = np.asarray(sorted(frames))
            for i in wanted:
                if i not in frames:
                    frames[i] = frames[int(got[np.argmin(np.abs(got - i))])]
        return np.stack([frames[i] for i in idx.tolist()])

    def _convert(self, frame: av.VideoFrame, size: tuple[int, int] | None, interpolation: str) -> np.ndarray:
        rot = _rotation_of(frame)
        if self._rotation is None:
            self._rotation = rot
        k = (rot // 90) % 4
        if size is None:
            img = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        else:
            h, w = size
            if k % 2 == 1:
                h, w = w, h
            img = self._reformatter.reformat(
                frame, width=w, height=h, format="rgb24", interpolation=interpolation
            ).to_ndarray()
        if k:
            img = np.ascontiguousarray(np.rot90(img, k))
        return img

    def _packets_decoded(self):
        """Decoded frames of the video stream from the current position; undecodable packets are skipped."""
        for packet in self._container.demux(self._stream):
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as e:
                log.debug("%s: skipping undecodable packet: %s", self.path, e)
                continue
            yield from decoded

    def _seek(self, pts: int) -> None:
        self._stream.codec_context.flush_buffers()
        try:
            self._container.seek(pts, stream=self._stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise _SeekUnreliable(f"seek failed: {_ffmpeg_reason(e)}") from None

    def _decode_seeking(
        self, wanted: list[int], size: tuple[int, int] | None, interpolation: str
    ) -> dict[int, np.ndarray]:
        index = self._index
        pts_of = index.pts
        out: dict[int, np.ndarray] = {}
        # Group wanted frames into runs that one forward decode from a key frame covers: the next wanted frame joins
        # the run when no key frame lies between, or when it is so close that decoding on is cheaper than a seek
        # (which flushes the decoder: a wanted frame just after a key frame would otherwise cost one seek per GOP).
        runs: list[list[int]] = []
        for i in wanted:
            if runs and (
                i - runs[-1][-1] <= _DECODE_ON_FRAMES
                or self._keyframe_before(int(pts_of[i])) <= int(pts_of[runs[-1][-1]])
            ):
                runs[-1].append(i)
            else:
                runs.append([i])
        for run in runs:
            first_pts = int(pts_of[run[0]])
            self._seek(self._keyframe_before(first_pts))
            targets = {int(pts_of[i]): i for i in run}
            last_pts = int(pts_of[run[-1]])
            first = True
            for frame in self._packets_decoded():
                p = frame.pts
                if p is None:
                    raise _SeekUnreliable("decoded frame without timestamp")
                if first:
                    first = False
                    if p > first_pts:
                        raise _SeekUnreliable(f"seek landed after the target ({p} > {first_pts})")
                i = targets.get(p)
                if i is not None:
                    out[i] = self._convert(frame, size, interpolation)
                if p >= last_pts:
                    break
        return out

    def _keyframe_before(self, pts: int) -> int:
        keys = self._index.keyframes
        j = bisect.bisect_right(keys, pts) - 1
        return keys[j] if j >= 0 else int(self._index.pts[0])

    def _rewind(self) -> None:
        """Back to the first packet: seek to 0, or reopen the file when it cannot seek."""
        self._stream.codec_context.flush_buffers()
        try:
            self._container.seek(0)
        except av.error.FFmpegError:  # unseekable: reopen
            stream_index, cc = self._stream.index, self._stream.codec_context
            threads, thread_type = cc.thread_count, cc.thread_type
            self._container.close()
            self._container = av.open(self.path, metadata_errors="ignore")
            self._stream = self._container.streams[stream_index]
            self._stream.codec_context.thread_count = threads
            self._stream.codec_context.thread_type = thread_type

    def _decode_sequential(
        self, wanted: list[int], convert: tuple[tuple[int, int] | None, str] | None
    ) -> dict[int, np.ndarray]:
        """Decode from the start, counting frames (robust fallback; ``convert=None`` only probes)."""
        self._rewind()
        out: dict[int, np.ndarray] = {}
        wanted_set = set(wanted)
        last = max(wanted)
        for n, frame in enumerate(self._packets_decoded()):
            if convert is None:
                self._rotation = _rotation_of(frame)
                return {n: np.empty(0)}
            if n in wanted_set:
                out[n] = self._convert(frame, *convert)
            if n >= last:
                break
        return out

    def iter_frames(
        self, size: tuple[int, int] | None = None, interpolation: str = DEFAULT_INTERPOLATION
    ) -> Iterator[np.ndarray]:
        """Every decodable frame in order, one ``(H, W, 3)`` uint8 RGB array at a time (constant memory)."""
        self._stream.codec_context.flush_buffers()
        try:
            self._container.seek(0)
        except av.error.FFmpegError as e:
            raise VideoReadError(self.path, f"cannot rewind to the start ({_ffmpeg_reason(e)})") from None
        for frame in self._packets_decoded():
            yield self._convert(frame, size, interpolation)

    def iter_indexed_frames(
        self, size: tuple[int, int] | None = None, interpolation: str = DEFAULT_INTERPOLATION
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for every decodable frame in presentation order, in one pass from the start (no seek
        after the rewind): ``index`` is the frame's place in :meth:`frame_times`, found from its timestamp, so a
        frame that fails to decode leaves a gap instead of shifting the frames after it (a file without usable
        timestamps counts frames).  Frames are ``(H, W, 3)`` uint8 RGB, one at a time (constant memory)."""
        self._rewind()
        pts = self._index.pts
        last = -1
        for frame in self._packets_decoded():
            if self._index.sequential or frame.pts is None:
                i = last + 1
            else:
                i = int(np.searchsorted(pts, frame.pts))
                if i >= len(pts) or pts[i] != frame.pts:
                    continue  # not a frame of the index (e.g. a discarded packet's)
            if i <= last or i >= len(pts):
                continue
            last = i
            yield i, self._convert(frame, size, interpolation)

    def read_all(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Every frame, ``(F, H, W, 3)`` uint8 RGB."""
        return self.get_frames(np.arange(self.num_frames), size=size)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SeekUnreliable(Exception):
    pass


def _rotation_of(frame: av.VideoFrame) -> int:
    try:
        rot = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round(rot / 90.0)) * 90 % 360 if rot else 0


def _ffmpeg_reason(e: Exception) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip()


def probe_video(path: str | os.PathLike[str], decode_check: bool = True) -> VideoInfo:
    """Open ``path``, index its video stream and (by default) decode its first and last frames.

    Raises :class:`VideoReadError` with the reason when the file cannot be read.
    """
    with VideoReader(path) as r:
        info = r.info
        if decode_check and r.num_frames > 1:
            r.get_frames([r.num_frames - 1], size=(16, 16))
    return info


def read_video(
    path: str | os.PathLike[str],
    indices: Sequence[int] | np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    threads: int = 1,
) -> np.ndarray:
    """Frames of ``path`` as ``(T, H, W, 3)`` uint8 RGB: all of them, or those at ``indices``."""
    with VideoReader(path, threads=threads) as r:
        if indices is None:
            return r.read_all(size=size)
        return r.get_frames(indices, size=size)


def list_videos(root: str | os.PathLike[str]) -> list[Path]:
    """Video files under ``root`` (recursive, by extension), sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
