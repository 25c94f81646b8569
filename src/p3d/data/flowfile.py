"""The flow files ``p3d flow`` writes: one lossless video per source video, ``<id>.flow.mkv``.

**Content.** Field ``t`` is the TV-L1 flow from frame ``t`` to frame ``t + 1``, quantised to uint8 as the released
flow model expects (:func:`p3d.flow.quantize_flow`: ``dense_flow``'s map, bound 20 px by default, 128 = no
motion): exactly the images that TSN / denseflow store as ``flow_x_%05d.jpg`` / ``flow_y_%05d.jpg``, before
JPEG compression.

**Encoding.** FFV1 (lossless, intra-only: every field is a key frame, so a clip is read by seeking straight to its
first field) in Matroska, pixel format ``yuv444p`` with the x image as the Y plane, the y image as the U plane and
a constant 128 V plane (it costs almost nothing: FFV1 codes a flat plane in a few bytes).  Planar 4:4:4 keeps x and
y apart, so resizing while decoding (FFmpeg's bilinear swscale) scales each image on its own, exactly as resizing
a ``flow_x`` and a ``flow_y`` JPEG does.  Each field carries the timestamp of its first frame in the source's
frame rate, so segments (start/end in seconds) select fields as they select frames.  The container's
``P3D_FLOW`` tag holds the provenance as JSON (bound, engine, TV-L1 parameters, the size the flow was computed at,
the source file).  Why this format: ``BENCHMARKS.md``, "Optical flow storage" — the measurement against JPEG
folders, PNG folders, ``.npy``/``.npz`` arrays, lossless H.264 and PNG-in-video.

Public API::

    FlowWriter(path, size=(H, W), fps=25.0, meta={...})   # .write(images (N, H, W, 2) uint8), .close(), .abort()
    write_flow_file(path, images (T, H, W, 2) uint8, fps=25.0, meta=None) -> path
    FlowReader(path).get_frames(indices, size=None) -> (T, H, W, 2) uint8;  .num_frames (fields), .meta
    read_flow_file(path) -> (T, H, W, 2) uint8
"""

from __future__ import annotations

import contextlib
import json
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from p3d.data.video import FLOW_SUFFIX, VideoReader
from p3d.errors import StorageError, VideoReadError
from p3d.fileio import atomic_path

__all__ = ["FLOW_SUFFIX", "META_TAG", "FlowReader", "FlowWriter", "read_flow_file", "write_flow_file"]

META_TAG = "P3D_FLOW"
_PIX_FMT = "yuv444p"
_FILL = 128  # the unused V plane


def _check_images(images: np.ndarray, size: tuple[int, int] | None) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 2:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(
            f"flow images must be a (N, H, W, 2) uint8 array (x, y), got {shape} {getattr(images, 'dtype', '')}"
        )
    if size is not None and images.shape[1:3] != tuple(size):
        raise ValueError(f"flow images of {images.shape[1]}x{images.shape[2]}, the file holds {size[0]}x{size[1]}")


class FlowWriter:
    """Stream quantised flow fields into ``path`` (``…/<id>.flow.mkv``): fields are encoded as they come, so a long
    video never sits in memory.  The file appears under its name only on :meth:`close` (atomic); a writer left
    without ``close`` (an exception inside ``with``) leaves nothing behind."""

    def __init__(
        self, path: str | os.PathLike[str], size: tuple[int, int], fps: float = 25.0, meta: dict[str, Any] | None = None
    ) -> None:
        self.path = Path(path)
        if not str(self.path).lower().endswith(FLOW_SUFFIX):
            raise ValueError(f"{self.path}: a flow file's name must end in {FLOW_SUFFIX}")
        h, w = size
        if h < 1 or w < 1:
            raise ValueError(f"flow size must be positive, got {size}")
        self.size = (int(h), int(w))
        self.count = 0
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self._container = av.open(str(tmp), "w", format="matroska")
            self._container.metadata[META_TAG] = json.dumps(meta or {}, sort_keys=True)
            rate = Fraction(fps).limit_denominator(1001000) if fps > 0 else Fraction(25)
            self._stream = self._container.add_stream("ffv1", rate=rate)
            self._stream.width, self._stream.height, self._stream.pix_fmt = w, h, _PIX_FMT
            self._stream.codec_context.thread_count = 1
            self._time_base = 1 / rate
        except (OSError, av.error.FFmpegError) as e:
            self.abort()
            raise StorageError(self.path, f"cannot create the flow file ({e})") from None
        self._fill = np.full((1, h, w), _FILL, np.uint8)

    def write(self, images: np.ndarray) -> None:
        """Append ``(N, H, W, 2)`` uint8 flow images (x, y), field after field."""
        _check_images(images, self.size)
        try:
            for img in images:
                planes = np.concatenate([np.moveaxis(img, -1, 0), self._fill])
                frame = av.VideoFrame.from_ndarray(planes, format=_PIX_FMT)
                frame.pts, frame.time_base = self.count, self._time_base
                self._container.mux(self._stream.encode(frame))
                self.count += 1
        except (OSError, av.error.FFmpegError) as e:
            self.abort()
            raise StorageError(self.path, f"writing the flow file failed ({e})") from None

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path.  A file without fields is not written."""
        if self.count == 0:
            self.abort()
            raise ValueError(f"{self.path}: no flow fields were written; a flow file holds at least one")
        try:
            self._container.mux(self._stream.encode())
            self._container.close()
        except (OSError, av.error.FFmpegError) as e:
            self.abort()
            raise StorageError(self.path, f"finishing the flow file failed ({e})") from None
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Give up: close the encoder and remove the temporary file (nothing appears under ``path``)."""
        with contextlib.suppress(Exception):
            self._container.close()
        with contextlib.suppress(Exception):
            self._atomic.__exit__(StorageError, StorageError(self.path, "aborted"), None)

    def __enter__(self) -> FlowWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_flow_file(
    path: str | os.PathLike[str], images: np.ndarray, fps: float = 25.0, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``(T, H, W, 2)`` uint8 flow images (x, y) as one flow file (atomically); returns the path."""
    _check_images(images, None)
    with FlowWriter(path, images.shape[1:3], fps=fps, meta=meta) as w:
        w.write(images)
    return Path(path)


class FlowReader(VideoReader):
    """Random access to the fields of a flow file: :meth:`get_frames` returns ``(T, H, W, 2)`` uint8 flow images,
    ``num_frames`` counts fields.  ``meta`` is the provenance written with the file."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        super().__init__(path, threads)
        if self._stream.codec_context.name != "ffv1":
            self.close()
            raise VideoReadError(self.path, f"not a p3d flow file (codec {self._stream.codec_context.name}, not ffv1)")
        try:
            self.meta: dict[str, Any] = json.loads(self._container.metadata.get(META_TAG, "{}"))
        except json.JSONDecodeError:
            self.meta = {}

    def _convert(self, frame: av.VideoFrame, size: tuple[int, int] | None, interpolation: str) -> np.ndarray:
        if frame.format.name != _PIX_FMT:
            raise VideoReadError(self.path, f"not a p3d flow file (pixel format {frame.format.name}, not {_PIX_FMT})")
        self._rotation = 0
        if size is not None and (frame.height, frame.width) != tuple(size):
            frame = frame.reformat(width=size[1], height=size[0], format=_PIX_FMT, interpolation=interpolation)
        planes = frame.to_ndarray()  # (3, H, W): x, y, fill
        return np.ascontiguousarray(np.moveaxis(planes[:2], 0, -1))


def read_flow_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Every field of a flow file: ``(T, H, W, 2)`` uint8."""
    with FlowReader(path) as r:
        return r.get_frames(np.arange(r.num_frames))
