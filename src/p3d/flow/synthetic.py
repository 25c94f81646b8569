"""Frame pairs with exactly known motion, for testing and benchmarking the flow engines.

The scene is a smooth random texture defined everywhere in the plane (a sum of sinusoids of random direction,
frequency and phase), so any warp of it can be sampled exactly, without interpolation.  A motion ``T`` maps a point
of frame 0 to its position in frame 1; frame 0 samples the texture ``f`` at the pixel centres, frame 1 samples
``f(T^-1(p))``, and the ground-truth flow at pixel ``p`` of frame 0 is ``T(p) - p`` — the convention of the engines
(``frame0[y, x] ≈ frame1[y + flow_y, x + flow_x]``).  Frames are rounded to uint8 grey, as decoded video would be.

Public API::

    MOTIONS = ("translate", "rotate", "zoom")
    motion_pair(kind, size, magnitude, rng) -> MotionPair(frame0, frame1, flow, valid)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MOTIONS", "MotionPair", "motion_pair", "texture"]

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
