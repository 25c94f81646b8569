"""Where a sample's frames come from: a video file, a folder of frame images, or a stored flow file.

A *sample path* in a dataset list may name

* a **video file** (anything FFmpeg reads): RGB frames, :class:`~p3d.data.video.VideoReader`;
* a **flow file** ``<id>.flow.mkv`` written by ``p3d flow`` (:mod:`p3d.data.flowfile`): quantised flow images;
* a **frame folder**, one per video, as the TSN / MMAction2 / denseflow extraction tools write them::

      v_ApplyEyeMakeup_g01_c01/img_00001.jpg ...        RGB frames (also ``image_00001.jpg``)
      v_ApplyEyeMakeup_g01_c01/flow_x_00001.jpg ...     x flow images (also ``x_00001.jpg``)
      v_ApplyEyeMakeup_g01_c01/flow_y_00001.jpg ...     y flow images (also ``y_00001.jpg``)

  (``.jpg``, ``.jpeg`` or ``.png``; numbered from any start, read in numerical order; one folder may hold RGB
  frames and flow together, as MMAction2's ``rawframes`` do).

:func:`open_source` opens any of them for a *modality* — ``"rgb"`` (``(T, H, W, 3)`` frames) or ``"flow"``
(``(T, H, W, 2)`` uint8 flow images, x then y; frame ``t`` of a flow source is the flow from video frame ``t`` to
``t + 1``, so a video of ``n`` frames has ``n - 1``).  Every source has the interface the datasets use:
``num_frames``, ``frame_range(start, end)``, ``get_frames(indices, size=(H, W))`` and ``close()``.  Resizing
(``size``) uses FFmpeg's bilinear ``swscale``, the scaler of the video path, one image plane at a time for flow:
a quantised flow image is resized like a frame (its values, displacements in pixels of the size the flow was
computed at, are not rescaled — the TSN convention).

A source that cannot serve the modality raises :class:`~p3d.errors.VideoReadError` with the reason (e.g. an RGB
video given to a flow model: compute flow with ``p3d flow``, or from the frames with ``--flow-from-rgb``).

Public API::

    open_source(path, modality="rgb", threads=1) -> VideoReader | FlowReader | FrameFolder
    source_modalities(path) -> {"rgb", "flow"} subset the path can serve
    list_sources(root) -> sorted video files, flow files and frame folders under root
    source_stem(path) -> the video's name without extension (``v_x.flow.mkv`` -> ``v_x``)
    FrameFolder(path, modality).get_frames(indices, size=None)
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from p3d.data.video import FLOW_SUFFIX, VIDEO_EXTENSIONS, VideoReader
from p3d.errors import VideoReadError

__all__ = [
    "MODALITIES",
    "FrameFolder",
    "FolderLayout",
    "list_sources",
    "open_source",
    "scan_frame_folder",
    "source_modalities",
    "source_stem",
]

MODALITIES = ("rgb", "flow")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# TSN's build_of.py / denseflow / MMAction2 names: img_00001.jpg, flow_x_00001.jpg, flow_y_00001.jpg; older
# denseflow builds write x_00001.jpg / y_00001.jpg.
_IMAGE_RE = re.compile(r"^(?P<kind>img|image|flow_x|flow_y|x|y)_(?P<num>\d+)\.(?:jpe?g|png)$", re.IGNORECASE)
_KIND = {"img": "rgb", "image": "rgb", "flow_x": "x", "x": "x", "flow_y": "y", "y": "y"}


@dataclass(frozen=True)
class FolderLayout:
    """Image file names of a frame folder by kind, in frame order."""

    rgb: tuple[str, ...]
    x: tuple[str, ...]
    y: tuple[str, ...]

    @property
    def modalities(self) -> set[str]:
        return ({"rgb"} if self.rgb else set()) | ({"flow"} if self.x or self.y else set())


def scan_frame_folder(path: str | os.PathLike[str]) -> FolderLayout:
    """The frame images of folder ``path`` by kind, each sorted by its number (``img_00002`` before ``img_00010``).

    Prefix variants of one kind (``flow_x_`` and ``x_``) must not be mixed; raises :class:`VideoReadError` if they
    are, or if the folder cannot be listed.
    """
    found: dict[str, dict[str, list[tuple[int, str]]]] = {"rgb": {}, "x": {}, "y": {}}
    try:
        names = os.listdir(path)
    except OSError as e:
        raise VideoReadError(path, f"cannot list the frame folder ({e.strerror})") from None
    for name in names:
        m = _IMAGE_RE.match(name)
        if m is None:
            continue
        prefix = m["kind"].lower()
        found[_KIND[prefix]].setdefault(prefix, []).append((int(m["num"]), name))
    kinds: dict[str, tuple[str, ...]] = {}
    for kind, by_prefix in found.items():
        if len(by_prefix) > 1:
            raise VideoReadError(path, f"mixes the image prefixes {sorted(by_prefix)} for one kind of frame")
        files = next(iter(by_prefix.values()), [])
        kinds[kind] = tuple(n for _, n in sorted(files))
    return FolderLayout(kinds["rgb"], kinds["x"], kinds["y"])


def is_flow_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(FLOW_SUFFIX)


def source_modalities(path: str | os.PathLike[str]) -> set[str]:
    """What ``path`` can serve: ``{"flow"}`` for a flow file, ``{"rgb"}`` for any other file, the kinds of images
    present for a frame folder (empty when it holds none); a missing path serves nothing."""
    p = Path(path)
    if p.is_dir():
        try:
            return scan_frame_folder(p).modalities
        except VideoReadError:
            return set()
    if p.is_file():
        return {"flow"} if is_flow_file(p) else {"rgb"}
    return set()


def source_stem(path: str | os.PathLike[str]) -> str:
    """The video name of a source: a folder's name, a flow file's name without ``.flow.mkv``, a video's stem."""
    p = Path(path)
    if is_flow_file(p):
        return p.name[: -len(FLOW_SUFFIX)]
    return p.name if p.is_dir() else p.stem


def list_sources(root: str | os.PathLike[str]) -> list[Path]:
    """Video files (by extension, flow files included) and frame folders under ``root``, recursively, sorted.

    A folder holding frame images is one source and is not searched further; hidden names (``.x``, e.g. the
    temporary files of an interrupted write) are skipped.
    """
    out: list[Path] = []
    for walked, (dirpath, dirnames, filenames) in enumerate(os.walk(root)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if walked > 0 and any(_IMAGE_RE.match(f) for f in filenames):  # the root itself is never one
            out.append(Path(dirpath))
            dirnames[:] = []
            continue
        out.extend(
            Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in VIDEO_EXTENSIONS
        )
    return sorted(out)


def _read_image(path: Path, mode: str) -> np.ndarray:
    """One image as uint8: ``mode`` "L" -> ``(H, W)``, "RGB" -> ``(H, W, 3)``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode))
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise VideoReadError(path, f"not a readable image ({e})") from None


def resize_plane(img: np.ndarray, size: tuple[int, int], interpolation: str = "BILINEAR") -> np.ndarray:
    """``(H, W)`` uint8 -> ``(h, w)`` with FFmpeg's swscale, the scaler of the video path (no colour conversion)."""
    h, w = size
    if img.shape == (h, w):
        return img
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="gray")
    return frame.reformat(width=w, height=h, interpolation=interpolation).to_ndarray()


class FrameFolder:
    """The frames of one frame folder as a video: ``modality="rgb"`` reads ``img_*`` frames, ``"flow"`` reads
    ``flow_x_*`` / ``flow_y_*`` (or ``x_*`` / ``y_*``) pairs.  Frame folders carry no timestamps, so samples with a
    segment (start/end in seconds) need a video or flow file."""

    def __init__(self, path: str | os.PathLike[str], modality: str = "rgb", threads: int = 1) -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        self.path = Path(path)
        self.modality = modality
        layout = scan_frame_folder(self.path)
        if modality == "rgb":
            if not layout.rgb:
                raise VideoReadError(self.path, f"no RGB frames (img_00001.jpg ...) in the folder{_holds(layout)}")
            self._files: list[tuple[str, ...]] = [(n,) for n in layout.rgb]
        else:
            if not (layout.x or layout.y):
                raise VideoReadError(
                    self.path, f"no flow images (flow_x_00001.jpg / flow_y_00001.jpg ...) in the folder{_holds(layout)}"
                )
            if len(layout.x) != len(layout.y):
                raise VideoReadError(self.path, f"{len(layout.x)} x flow images but {len(layout.y)} y flow images")
            self._files = list(zip(layout.x, layout.y, strict=True))

    @property
    def num_frames(self) -> int:
        return len(self._files)

    def frame_range(self, start: float | None, end: float | None) -> tuple[int, int]:
        if start is None and end is None:
            return 0, self.num_frames
        raise VideoReadError(self.path, "a frame folder has no timestamps; a segment (start/end) needs a video file")

    def get_frames(
        self, indices: Sequence[int] | np.ndarray, size: tuple[int, int] | None = None, interpolation: str = "BILINEAR"
    ) -> np.ndarray:
        """Frames at ``indices`` (repeats allowed): ``(T, H, W, 3)`` RGB or ``(T, H, W, 2)`` flow images, uint8,
        resized to ``size=(H, W)`` when given."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise ValueError("get_frames needs at least one frame index")
        if idx.min() < 0 or idx.max() >= self.num_frames:
            raise VideoReadError(
                self.path, f"frame index out of range [0, {self.num_frames}): {idx.min()}..{idx.max()}"
            )
        cache: dict[int, np.ndarray] = {}
        for i in np.unique(idx).tolist():
            cache[i] = self._load(i, size, interpolation)
        shapes = {a.shape for a in cache.values()}
        if len(shapes) > 1:
            raise VideoReadError(self.path, f"images of different sizes in one folder: {sorted(shapes)}")
        return np.stack([cache[i] for i in idx.tolist()])

    def _load(self, i: int, size: tuple[int, int] | None, interpolation: str) -> np.ndarray:
        if self.modality == "rgb":
            img = _read_image(self.path / self._files[i][0], "RGB")
            if size is None or img.shape[:2] == tuple(size):
                return img
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            return frame.to_ndarray(width=size[1], height=size[0], format="rgb24", interpolation=interpolation)
        planes = [_read_image(self.path / name, "L") for name in self._files[i]]
        if planes[0].shape != planes[1].shape:
            raise VideoReadError(self.path, f"{self._files[i][0]} and {self._files[i][1]} differ in size")
        if size is not None:
            planes = [resize_plane(p, size, interpolation) for p in planes]
        return np.stack(planes, axis=-1)

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _holds(layout: FolderLayout) -> str:
    parts = [f"{len(v)} {k}" for k, v in (("RGB frame", layout.rgb), ("x flow", layout.x), ("y flow", layout.y)) if v]
    return f" (it holds {', '.join(parts)} images)" if parts else " (it holds no frame images)"


def open_source(path: str | os.PathLike[str], modality: str = "rgb", threads: int = 1):
    """Open ``path`` for ``modality`` (see the module docstring); raises :class:`VideoReadError` with the reason."""
    from p3d.data.flowfile import FlowReader

    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    p = Path(path)
    if p.is_dir():
        return FrameFolder(p, modality, threads)
    if not p.exists():
        raise VideoReadError(p, "file not found")
    if is_flow_file(p):
        if modality != "flow":
            raise VideoReadError(p, "a flow file (p3d flow), but the model takes RGB frames")
        return FlowReader(p, threads=threads)
    if modality == "flow":
        raise VideoReadError(
            p,
            "an RGB video, but the model takes optical flow: compute it with `p3d flow`, or from the frames on the "
            "fly (--flow-from-rgb in test/extract/predict)",
        )
    return VideoReader(p, threads=threads)
