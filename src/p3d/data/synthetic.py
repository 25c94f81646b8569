"""Synthetic action videos whose class is carried only by motion (the demo's and the tests' data).

Each video shows one randomly textured object (an ellipse of random aspect) on a random smooth background.
The object's position lives on a torus (it wraps around the frame edges), its orientation on the circle and
its log-size in a fixed range.  Classes differ only in *how these change over time*:

================  ==============================================================
``MoveLeft``      position moves left (``MoveRight``, ``MoveUp``, ``MoveDown``)
``RotateCW``      orientation turns clockwise (``RotateCCW``: counter-clockwise)
``Approach``      size grows exponentially (``Recede``: shrinks)
================  ==============================================================

Why a single frame says nothing about the class: every class draws the position uniformly on the torus,
the orientation uniformly on the circle, and the size from the same distribution (a static object's size
is drawn as the size of an approaching object at a uniformly random frame); textures, colours, object size
and speed are drawn independently of the class.  Each paired class is the time-reversal of its partner
(left/right, CW/CCW, approach/recede), so the frames of a video — as a set — have the same distribution
in every class; only their order tells the class.

Written as real H.264 mp4 files (PyAV) in the UCF101 layout::

    root/UCF-101/<Class>/v_<Class>_g<NN>_c01.mp4
    root/ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt}

so ``build_samples("ucf101", root, subset="train")`` reads it.  Deterministic from ``seed``.

Untrimmed videos (temporal localisation, ActivityNet-style): :func:`make_synthetic_untrimmed` writes long
videos in which one object performs several of these motions, separated by stretches of background in which
nothing moves, plus an ActivityNet v1.3 JSON with every segment's boundaries in seconds.

Public API::

    make_synthetic_dataset(root, num_classes=6, videos_per_class=30, num_frames=32, size=(112, 112), seed=0)
    make_synthetic_untrimmed(root, num_videos=8, num_classes=6, ..., seed=0) -> path of the JSON
    render_video(class_name, rng, num_frames, size) -> (T, H, W, 3) uint8
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from p3d.fileio import atomic_write_json

CLASSES = ("MoveLeft", "MoveRight", "RotateCW", "RotateCCW", "Approach", "Recede", "MoveUp", "MoveDown")

# Object radius as a fraction of min(H, W): log-uniform support of the size at any frame.
_SIZE_RANGE = (0.10, 0.32)
_SPEED_RANGE = (0.012, 0.03)  # fraction of the frame per frame
_SPIN_RANGE = (np.deg2rad(4.0), np.deg2rad(10.0))  # radians per frame
_ZOOM_RANGE = (0.012, 0.022)  # log-size change per frame


@dataclass(frozen=True)
class Motion:
    """Per-frame object state: centre ``(T, 2)`` (y, x) in pixels, angle ``(T,)`` rad, radius ``(T,)`` px."""

    centre: np.ndarray
    angle: np.ndarray
    radius: np.ndarray


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """``(h, w, 3)`` float in [0, 1]: random colours on a ``cells`` grid, bilinearly interpolated."""
    grid = rng.random((cells + 1, cells + 1, 3))
    ys = np.linspace(0, cells, h, endpoint=False)
    xs = np.linspace(0, cells, w, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    coarse = _smooth_noise(rng, h, w, int(rng.integers(2, 5)))
    fine = _smooth_noise(rng, h, w, int(rng.integers(6, 12)))
    return np.clip(0.55 * coarse + 0.45 * fine, 0.0, 1.0)


def sample_motion(class_name: str, rng: np.random.Generator, num_frames: int, size: tuple[int, int]) -> Motion:
    """Draw the object's trajectory for ``class_name`` (see the module docstring for the distributions)."""
    if class_name not in CLASSES:
        raise ValueError(f"unknown synthetic class {class_name!r}; expected one of {CLASSES}")
    h, w = size
    t = np.arange(num_frames, dtype=np.float64)
    span = num_frames - 1
    centre0 = rng.random(2) * np.array([h, w])
    angle0 = rng.random() * 2 * np.pi
    lo, hi = np.log(np.array(_SIZE_RANGE) * min(h, w))
    zoom = rng.uniform(*_ZOOM_RANGE)
    if zoom * span > hi - lo:
        zoom = (hi - lo) / max(span, 1)
    log_r0 = rng.uniform(lo, hi - zoom * span)  # log-radius of an approaching object at frame 0
    speed = rng.uniform(*_SPEED_RANGE) * np.array([h, w])
    spin = rng.uniform(*_SPIN_RANGE)

    centre = np.repeat(centre0[None], num_frames, axis=0)
    angle = np.full(num_frames, angle0)
    log_r = np.full(num_frames, log_r0 + zoom * rng.integers(0, num_frames))  # a static size, same marginal
    direction = {"MoveLeft": (0, -1), "MoveRight": (0, 1), "MoveUp": (-1, 0), "MoveDown": (1, 0)}
    if class_name in direction:
        centre = centre0[None] + np.outer(t, np.array(direction[class_name]) * speed)
    elif class_name == "RotateCW":  # image y points down: a decreasing math angle turns clockwise on screen
        angle = angle0 - spin * t
    elif class_name == "RotateCCW":
        angle = angle0 + spin * t
    elif class_name == "Approach":
        log_r = log_r0 + zoom * t
    elif class_name == "Recede":
        log_r = log_r0 + zoom * (span - t)
    centre = np.mod(centre, np.array([h, w]))
    return Motion(centre=centre, angle=np.mod(angle, 2 * np.pi), radius=np.exp(log_r))


@dataclass(frozen=True)
class _Look:
    """What a video looks like apart from the motion: background ``(H, W, 3)`` and object texture
    ``(64, 64, 3)``, floats around [0, 1], and the object's aspect ratio."""

    background: np.ndarray
    texture: np.ndarray
    aspect: float


def _sample_look(rng: np.random.Generator, size: tuple[int, int]) -> _Look:
    h, w = size
    background = _texture(rng, h, w) * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.3)
    texture = _texture(rng, 64, 64)
    texture = (texture - texture.mean()) * rng.uniform(1.5, 2.5) + rng.random(3)  # high contrast, any hue
    return _Look(background, texture, float(rng.uniform(0.5, 0.8)))


def _draw(look: _Look, motion: Motion) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of the object of ``look`` following ``motion`` over its background."""
    h, w = look.background.shape[:2]
    tex_n = look.texture.shape[0]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.empty((len(motion.angle), h, w, 3), dtype=np.uint8)
    for k in range(len(frames)):
        cy, cx = motion.centre[k]
        dy = np.mod(yy - cy + h / 2, h) - h / 2  # torus: nearest copy of the centre
        dx = np.mod(xx - cx + w / 2, w) - w / 2
        c, s = np.cos(motion.angle[k]), np.sin(motion.angle[k])
        r = motion.radius[k]
        # Object coordinates (math convention: y up), in units of the radius.
        u = (c * dx - s * dy) / r
        v = (s * dx + c * dy) / r
        rho = np.sqrt(u**2 + (v / look.aspect) ** 2)
        alpha = np.clip((1.0 - rho) * r, 0.0, 1.0)[..., None]  # ~1 px anti-aliased edge
        ti = np.clip(((v + 1) * 0.5 * (tex_n - 1)).round().astype(int), 0, tex_n - 1)
        tj = np.clip(((u + 1) * 0.5 * (tex_n - 1)).round().astype(int), 0, tex_n - 1)
        img = look.background * (1 - alpha) + look.texture[ti, tj] * alpha
        frames[k] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames


def render_video(
    class_name: str, rng: np.random.Generator, num_frames: int = 32, size: tuple[int, int] = (112, 112)
) -> np.ndarray:
    """One synthetic video of ``class_name``: ``(num_frames, H, W, 3)`` uint8 RGB."""
    motion = sample_motion(class_name, rng, num_frames, size)
    return _draw(_sample_look(rng, size), motion)


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: int = 25, crf: int = 18, gop: int = 16) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 (yuv420p) mp4; H and W must be even."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 yuv420p needs even frame sizes, got {h}x{w}")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # x264 frame threads would make the bytes timing-dependent
        # x264's lookahead (mbtree, adaptive B-frames) gave run-to-run different bytes: off, so files are
        # reproducible from the seed.
        stream.codec_context.options = {
            "preset": "veryfast",
            "crf": str(crf),
            "g": str(gop),
            "x264-params": "rc-lookahead=0:mbtree=0:b-adapt=0",
        }
        for t, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            # Every field the encoder reads set explicitly: left to PyAV's conversion inside encode(),
            # the output with B-frames varied from run to run.
            frame.pts = t
            frame.time_base = Fraction(1, fps)
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_synthetic_dataset(
    root: str | os.PathLike[str],
    num_classes: int = 6,
    videos_per_class: int = 30,
    *,
    num_frames: int = 32,
    size: tuple[int, int] = (112, 112),
    test_fraction: float = 0.3,
    fps: int = 25,
    seed: int = 0,
) -> Path:
    """Write a motion-only synthetic dataset in the UCF101 layout under ``root``; returns ``root``.

    The first ``num_classes`` of :data:`CLASSES` are used.  Per class, the first ``round(test_fraction *
    videos_per_class)`` videos (groups ``g01..``) form ``testlist01.txt``, the others ``trainlist01.txt``.
    Video ``k`` of class ``c`` is rendered from ``np.random.default_rng([seed, c, k])``.
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {num_classes}")
    if videos_per_class < 1 or num_frames < 2:
        raise ValueError(f"need videos_per_class >= 1 and num_frames >= 2, got {videos_per_class}, {num_frames}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    root = Path(root)
    vroot, sroot = root / "UCF-101", root / "ucfTrainTestlist"
    sroot.mkdir(parents=True, exist_ok=True)
    classes = CLASSES[:num_classes]
    n_test = int(round(test_fraction * videos_per_class))
    train_lines, test_lines = [], []
    for c, name in enumerate(classes):
        (vroot / name).mkdir(parents=True, exist_ok=True)
        for k in range(videos_per_class):
            rel = f"{name}/v_{name}_g{k + 1:02d}_c01.mp4"
            frames = render_video(name, np.random.default_rng([seed, c, k]), num_frames, size)
            write_video(vroot / rel, frames, fps=fps)
            if k < n_test:
                test_lines.append(f"{rel}\n")
            else:
                train_lines.append(f"{rel} {c + 1}\n")
    (sroot / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(classes)))
    (sroot / "trainlist01.txt").write_text("".join(train_lines))
    (sroot / "testlist01.txt").write_text("".join(test_lines))
    return root


UNTRIMMED_JSON = "activity_net.v1-3.min.json"


def _continue_motion(m: Motion, after: Motion | None, size: tuple[int, int]) -> Motion:
    """``m`` moved so that it starts where ``after`` ends (position and angle exactly, size where possible).

    Position and angle live on a torus and a circle, so any start works.  The log-size trajectory keeps its
    shape and starts at ``after``'s last size, shifted just enough to stay inside ``_SIZE_RANGE`` (only an
    Approach/Recede segment can need that: its size then jumps at the segment's first frame)."""
    if after is None:
        return m
    h, w = size
    period = np.array([h, w], dtype=np.float64)
    step = np.diff(m.centre, axis=0)
    step = np.mod(step + period / 2, period) - period / 2  # undo the wrap: per-frame steps are < half a frame
    centre = np.mod(after.centre[-1] + np.concatenate([np.zeros((1, 2)), np.cumsum(step, axis=0)]), period)
    turn = np.unwrap(m.angle)
    angle = np.mod(after.angle[-1] + turn - turn[0], 2 * np.pi)
    lo, hi = np.log(np.array(_SIZE_RANGE) * min(h, w))
    growth = np.log(m.radius) - np.log(m.radius[0])
    log_r0 = np.clip(np.log(after.radius[-1]), lo - growth.min(), hi - growth.max())
    return Motion(centre=centre, angle=angle, radius=np.exp(log_r0 + growth))


def _hold(m: Motion, frame: int, n: int) -> Motion:
    """``n`` frames of the object standing still in ``m``'s state at ``frame``."""
    return Motion(
        centre=np.repeat(m.centre[frame][None], n, axis=0),
        angle=np.full(n, m.angle[frame]),
        radius=np.full(n, m.radius[frame]),
    )


def _draw_range(rng: np.random.Generator, bounds: tuple[int, int], what: str) -> int:
    lo, hi = bounds
    if not 0 <= lo <= hi:
        raise ValueError(f"{what} must be a range (lo, hi) with 0 <= lo <= hi, got {bounds}")
    return int(rng.integers(lo, hi + 1))


def render_untrimmed(
    class_names: Sequence[str],
    rng: np.random.Generator,
    segment_frames: Sequence[int],
    gap_frames: Sequence[int],
    size: tuple[int, int] = (112, 112),
) -> np.ndarray:
    """One long video: ``gap_frames[0]`` still frames, action ``class_names[0]`` for ``segment_frames[0]``
    frames, ``gap_frames[1]`` still frames, ... ``gap_frames[-1]`` still frames; ``(T, H, W, 3)`` uint8 RGB
    with ``T = sum(segment_frames) + sum(gap_frames)`` and ``len(gap_frames) == len(class_names) + 1``.

    One background and one object for the whole video.  In the still stretches the object stands where the
    previous action left it (before the first action: where that action starts), so only the actions move.
    """
    if len(segment_frames) != len(class_names) or len(gap_frames) != len(class_names) + 1:
        raise ValueError(
            f"need one length per class and one gap more, got {len(class_names)} classes, "
            f"{len(segment_frames)} segment lengths and {len(gap_frames)} gaps"
        )
    if not class_names or min(segment_frames) < 2 or min(gap_frames) < 0:
        raise ValueError(f"need >= 1 action of >= 2 frames and gaps >= 0, got {segment_frames}, {gap_frames}")
    motions = []
    for name, n in zip(class_names, segment_frames, strict=True):
        motions.append(_continue_motion(sample_motion(name, rng, n, size), motions[-1] if motions else None, size))
    look = _sample_look(rng, size)
    parts = [_hold(motions[0], 0, gap_frames[0])]
    for m, gap in zip(motions, gap_frames[1:], strict=True):
        parts += [m, _hold(m, -1, gap)]
    motion = Motion(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("centre", "angle", "radius")))
    return _draw(look, motion)


def make_synthetic_untrimmed(
    root: str | os.PathLike[str],
    num_videos: int = 8,
    *,
    num_classes: int = 6,
    segments_per_video: tuple[int, int] = (1, 3),
    segment_frames: tuple[int, int] = (24, 48),
    background_frames: tuple[int, int] = (12, 36),
    size: tuple[int, int] = (112, 112),
    fps: int = 25,
    validation_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write untrimmed synthetic videos and their ActivityNet v1.3 JSON under ``root``; returns the JSON path.

    Layout::

        root/videos/v_synthetic<NNNN>.mp4
        root/activity_net.v1-3.min.json   {"version", "taxonomy", "database": {id: {"subset", "duration",
                                            "resolution", "annotations": [{"segment": [s, e], "label"}]}}}

    so ``parse_activitynet(json, root, subset=..., trimmed=...)`` reads it.  Video ``k`` (id
    ``synthetic<kkkk>``) is drawn from ``np.random.default_rng([seed, k])``: a number of actions in
    ``segments_per_video``, each a class among the first ``num_classes`` of :data:`CLASSES` lasting a number
    of frames in ``segment_frames``, with a still stretch of ``background_frames`` frames before, between and
    after them (all ranges inclusive).  An action over frames ``[a, b)`` is annotated ``[a / fps, b / fps]``
    seconds; ``duration`` is ``T / fps``.  The first ``round(validation_fraction * num_videos)`` videos form
    the "validation" subset, the others "training".
    """
    if not 1 <= num_classes <= len(CLASSES):
        raise ValueError(f"num_classes must be in 1..{len(CLASSES)}, got {num_classes}")
    if num_videos < 1 or fps < 1:
        raise ValueError(f"need num_videos >= 1 and fps >= 1, got {num_videos}, {fps}")
    if segments_per_video[0] < 1 or segment_frames[0] < 2:
        raise ValueError(
            f"need >= 1 action per video of >= 2 frames, got segments_per_video={segments_per_video}, "
            f"segment_frames={segment_frames}"
        )
    if not 0.0 <= validation_fraction <= 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1], got {validation_fraction}")
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    classes = CLASSES[:num_classes]
    n_val = int(round(validation_fraction * num_videos))
    database = {}
    for k in range(num_videos):
        rng = np.random.default_rng([seed, k])
        n = _draw_range(rng, segments_per_video, "segments_per_video")
        names = [classes[int(c)] for c in rng.integers(0, num_classes, n)]
        lengths = [_draw_range(rng, segment_frames, "segment_frames") for _ in range(n)]
        gaps = [_draw_range(rng, background_frames, "background_frames") for _ in range(n + 1)]
        frames = render_untrimmed(names, rng, lengths, gaps, size)
        vid = f"synthetic{k:04d}"
        write_video(root / "videos" / f"v_{vid}.mp4", frames, fps=fps)
        annotations, t = [], 0
        for gap, length, name in zip(gaps, lengths, names, strict=False):  # the last gap is trailing
            t += gap
            annotations.append({"segment": [t / fps, (t + length) / fps], "label": name})
            t += length
        database[vid] = {
            "subset": "validation" if k < n_val else "training",
            "duration": len(frames) / fps,
            "resolution": f"{size[1]}x{size[0]}",
            "annotations": annotations,
        }
    taxonomy = [{"nodeId": 0, "nodeName": "Root", "parentId": None, "parentName": None}]
    taxonomy += [{"nodeId": i + 1, "nodeName": c, "parentId": 0, "parentName": "Root"} for i, c in enumerate(classes)]
    out = root / UNTRIMMED_JSON
    atomic_write_json(out, {"version": "VERSION 1.3", "taxonomy": taxonomy, "database": database})
    return out
