"""Frame pairs with exactly known motion, for testing and benchmarking the flow engines.

The scene is a smooth random texture defined everywhere in the plane (a sum of sinusoids of random direction,
frequency and phase), so any warp of it can be sampled exactly, without interpolation.  A motion ``T`` maps a point
of frame 0 to its position in frame 1; frame 0 samples the texture ``f`` at the pixel centres, frame 1 samples
``f(T^-1(p))``, and the ground-truth flow at pixel ``p`` of frame 0 is ``T(p) - p`` — the convention of the engines
(``frame0[y, x] ≈ frame1[y + flow_y, x + flow_x]``).  Frames are rounded to uint8 grey, as decoded video would be.

:func:`moving_scene` renders a longer colour clip closer to real footage: a panning, zooming textured background
and an independently moving textured disc in front of it (motion boundaries, occlusions), with the ground truth
of every consecutive pair and a mask of the pixels where it is defined.

Public API::

    MOTIONS = ("translate", "rotate", "zoom")
    motion_pair(kind, size, magnitude, rng) -> MotionPair(frame0, frame1, flow, valid)
    moving_scene(size, num_frames, rng) -> Scene(frames, flow, valid)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MOTIONS", "MotionPair", "Scene", "motion_pair", "moving_scene", "texture"]

MOTIONS = ("translate", "rotate", "zoom")


@dataclass(frozen=True)
class MotionPair:
    """``frame0, frame1``: ``(H, W)`` uint8 grey; ``flow``: ``(2, H, W)`` float32 ground truth (x, y) in pixels;
    ``valid``: ``(H, W)`` bool, pixels whose destination lies inside frame 1 (elsewhere the motion is unobservable).
    """

    frame0: np.ndarray
    frame1: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class _Texture:
    """``f(x, y) = mean + sum_k a_k sin(w_k . (x, y) + phi_k)``, clipped to 0..255."""

    freqs: np.ndarray  # (K, 2) radians per pixel, (x, y)
    phases: np.ndarray  # (K,)
    amps: np.ndarray  # (K,)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        v = np.full(x.shape, 128.0)
        for (fx, fy), phase, amp in zip(self.freqs, self.phases, self.amps, strict=True):
            v += amp * np.sin(fx * x + fy * y + phase)
        return np.clip(v, 0.0, 255.0)


def texture(rng: np.random.Generator, components: int = 16) -> _Texture:
    """A random texture: ``components`` sinusoids with wavelengths between ~6 and ~60 pixels, contrast ~±80."""
    angle = rng.uniform(0.0, np.pi, components)
    omega = np.exp(rng.uniform(np.log(0.1), np.log(1.0), components))  # radians per pixel
    freqs = np.stack([omega * np.cos(angle), omega * np.sin(angle)], axis=1)
    amps = rng.uniform(0.5, 1.0, components)
    amps *= 80.0 / np.sqrt(0.5 * np.sum(amps**2))  # RMS contrast ~57 grey levels
    return _Texture(freqs, rng.uniform(0.0, 2 * np.pi, components), amps)


def motion_pair(
    kind: str, size: tuple[int, int], magnitude: float, rng: np.random.Generator, components: int = 16
) -> MotionPair:
    """Two frames of a random texture under a known motion of ``kind``.

    ``translate``: shift by ``magnitude`` pixels in a random direction (sub-pixel in general); ``rotate``: turn by
    ``magnitude`` degrees (random sense) about the frame centre; ``zoom``: scale by ``1 + magnitude`` (random
    direction: in or out) about the frame centre.
    """
    if kind not in MOTIONS:
        raise ValueError(f"motion_pair: kind must be one of {MOTIONS}, got {kind!r}")
    h, w = size
    f = texture(rng, components)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    if kind == "translate":
        a = rng.uniform(0.0, 2 * np.pi)
        m = np.eye(2)
        shift = magnitude * np.array([np.cos(a), np.sin(a)])
    elif kind == "rotate":
        a = np.deg2rad(magnitude) * rng.choice([-1.0, 1.0])
        m = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        shift = np.zeros(2)
    else:
        s = 1.0 + magnitude if rng.random() < 0.5 else 1.0 / (1.0 + magnitude)
        m = s * np.eye(2)
        shift = np.zeros(2)
    # T(p) = c + M (p - c) + shift;  T^-1(q) = c + M^-1 (q - c - shift).
    px, py = xs - cx, ys - cy
    tx = cx + m[0, 0] * px + m[0, 1] * py + shift[0]
    ty = cy + m[1, 0] * px + m[1, 1] * py + shift[1]
    inv = np.linalg.inv(m)
    qx, qy = px - shift[0], py - shift[1]
    sx = cx + inv[0, 0] * qx + inv[0, 1] * qy
    sy = cy + inv[1, 0] * qx + inv[1, 1] * qy
    frame0 = np.round(f(xs, ys)).astype(np.uint8)
    frame1 = np.round(f(sx, sy)).astype(np.uint8)
    flow = np.stack([tx - xs, ty - ys]).astype(np.float32)
    valid = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return MotionPair(frame0, frame1, flow, valid)


@dataclass(frozen=True)
class Scene:
    """``frames``: ``(T, H, W, 3)`` uint8 RGB; ``flow``: ``(T-1, 2, H, W)`` float32 ground truth from frame ``t``
    to ``t + 1``; ``valid``: ``(T-1, H, W)`` bool, pixels visible in both frames and away from the object's edge.
    """

    frames: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


def moving_scene(
    size: tuple[int, int],
    num_frames: int,
    rng: np.random.Generator,
    pan: tuple[float, float] = (2.5, -1.0),
    zoom: float = 0.01,
    velocity: tuple[float, float] = (-4.0, 2.5),
) -> Scene:
    """A camera panning by ``pan`` px/frame and zooming by ``1 + zoom`` per frame about the frame centre over a
    textured background, and a textured disc (radius 0.19 of the height) moving by ``velocity`` px/frame.

    The disc's edge is anti-aliased over one pixel; pixels within 2 px of it, background pixels that the disc
    covers in the next frame and pixels whose destination leaves the frame are not ``valid``.
    """
    h, w = size
    bg = [texture(rng) for _ in range(3)]
    fg = [texture(rng) for _ in range(3)]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    radius = 0.19 * h
    start = c + rng.uniform(-0.1, 0.1, 2) * (w, h) - np.array(velocity) * (num_frames - 1) / 2.0

    def camera_inverse(t: int) -> tuple[np.ndarray, np.ndarray]:
        """World position of each pixel of frame ``t``: ``(p - c - t pan) / (1 + zoom)^t + c``."""
        z = (1.0 + zoom) ** t
        return (xs - c[0] - t * pan[0]) / z + c[0], (ys - c[1] - t * pan[1]) / z + c[1]

    def disc(t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Offsets from the disc centre in frame ``t`` and the distance to it."""
        ox, oy = xs - (start[0] + t * velocity[0]), ys - (start[1] + t * velocity[1])
        return ox, oy, np.hypot(ox, oy)

    frames = np.empty((num_frames, h, w, 3), np.uint8)
    for t in range(num_frames):
        wx, wy = camera_inverse(t)
        ox, oy, dist = disc(t)
        alpha = np.clip(radius + 0.5 - dist, 0.0, 1.0)[..., None]
        back = np.stack([f(wx, wy) for f in bg], axis=-1)
        front = np.stack([f(ox, oy) for f in fg], axis=-1)
        frames[t] = np.round(back * (1 - alpha) + front * alpha).astype(np.uint8)
    flows = np.empty((num_frames - 1, 2, h, w), np.float32)
    valid = np.empty((num_frames - 1, h, w), bool)
    for t in range(num_frames - 1):
        wx, wy = camera_inverse(t)
        z = (1.0 + zoom) ** (t + 1)
        bx = (wx - c[0]) * z + c[0] + (t + 1) * pan[0] - xs
        by = (wy - c[1]) * z + c[1] + (t + 1) * pan[1] - ys
        _, _, dist = disc(t)
        inside = dist < radius
        fx = np.where(inside, velocity[0], bx)
        fy = np.where(inside, velocity[1], by)
        # Destination of each pixel, and whether the disc covers it in frame t + 1.
        _, _, dist_next = disc(t + 1)
        dest_x, dest_y = xs + fx, ys + fy
        ix = np.clip(np.round(dest_x).astype(int), 0, w - 1)
        iy = np.clip(np.round(dest_y).astype(int), 0, h - 1)
        covered = ~inside & (dist_next[iy, ix] < radius + 2.0)
        in_frame = (dest_x >= 0) & (dest_x <= w - 1) & (dest_y >= 0) & (dest_y <= h - 1)
        flows[t] = np.stack([fx, fy])
        valid[t] = in_frame & ~covered & (np.abs(dist - radius) > 2.0)
    return Scene(frames, flows, valid)
