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

Public API::

    make_synthetic_dataset(root, num_classes=6, videos_per_class=30, num_frames=32, size=(112, 112), seed=0)
    render_video(class_name, rng, num_frames, size) -> (T, H, W, 3) uint8
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

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


def render_video(
    class_name: str, rng: np.random.Generator, num_frames: int = 32, size: tuple[int, int] = (112, 112)
) -> np.ndarray:
    """One synthetic video of ``class_name``: ``(num_frames, H, W, 3)`` uint8 RGB."""
    h, w = size
    motion = sample_motion(class_name, rng, num_frames, size)
    background = _texture(rng, h, w) * rng.uniform(0.5, 1.0) + rng.uniform(0.0, 0.3)
    tex_n = 64
    texture = _texture(rng, tex_n, tex_n)
    texture = (texture - texture.mean()) * rng.uniform(1.5, 2.5) + rng.random(3)  # high contrast, any hue
    aspect = rng.uniform(0.5, 0.8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    frames = np.empty((num_frames, h, w, 3), dtype=np.uint8)
    for k in range(num_frames):
        cy, cx = motion.centre[k]
        dy = np.mod(yy - cy + h / 2, h) - h / 2  # torus: nearest copy of the centre
        dx = np.mod(xx - cx + w / 2, w) - w / 2
        c, s = np.cos(motion.angle[k]), np.sin(motion.angle[k])
        r = motion.radius[k]
        # Object coordinates (math convention: y up), in units of the radius.
        u = (c * dx - s * dy) / r
        v = (s * dx + c * dy) / r
        rho = np.sqrt(u**2 + (v / aspect) ** 2)
        alpha = np.clip((1.0 - rho) * r, 0.0, 1.0)[..., None]  # ~1 px anti-aliased edge
        ti = np.clip(((v + 1) * 0.5 * (tex_n - 1)).round().astype(int), 0, tex_n - 1)
        tj = np.clip(((u + 1) * 0.5 * (tex_n - 1)).round().astype(int), 0, tex_n - 1)
        img = background * (1 - alpha) + texture[ti, tj] * alpha
        frames[k] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return frames


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
