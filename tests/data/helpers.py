"""Tiny test videos written with PyAV.  Frame ``t`` carries its index as 6 black/white blocks across the
middle (robust to lossy codecs and resizing) and a white marker in its top-left corner (orientation)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

BITS = 6


def _band(h: int) -> slice:
    return slice(int(0.35 * h), int(0.65 * h) + 1)


def _block(w: int, k: int) -> slice:
    return slice(k * w // BITS, (k + 1) * w // BITS)


def frame_index(img: np.ndarray) -> int:
    """Index of a decoded ``(H, W, 3)`` frame from its black/white blocks."""
    h, w = img.shape[:2]
    band = img[_band(h)].mean(axis=-1)
    t = 0
    for k in range(BITS):
        sl = _block(w, k)
        inner = band[:, sl][:, 1:-1] if band[:, sl].shape[1] > 2 else band[:, sl]
        t |= int(inner.mean() > 128) << k
    return t


def make_frames(n: int, h: int = 48, w: int = 64, marker: bool = True) -> np.ndarray:
    if n > 2**BITS:
        raise ValueError(f"at most {2**BITS} frames can carry their index")
    f = np.full((n, h, w, 3), 100, np.uint8)
    for t in range(n):
        for k in range(BITS):
            f[t, _band(h), _block(w, k)] = 235 if (t >> k) & 1 else 20
        if marker:
            f[t, : max(2, h // 6), : max(2, w // 6)] = 255
    return f


def encoder_available(codec: str) -> bool:
    try:
        av.Codec(codec, "w")
    except Exception:
        return False
    return True


def require_encoder(codec: str) -> None:
    if not encoder_available(codec):
        pytest.skip(f"this FFmpeg build has no {codec!r} encoder")


def write(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    fps: int = 25,
    options: dict[str, str] | None = None,
    pts: list[int] | None = None,
    time_base: Fraction | None = None,
    rotation: int | None = None,
    audio_first: bool = False,
    codec_tag: str | None = None,
) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB into ``path``; ``pts`` in ``time_base`` units for VFR."""
    require_encoder(codec)
    with av.open(str(path), "w") as c:
        if audio_first:
            a = c.add_stream("pcm_s16le" if path.suffix != ".mp4" else "aac", rate=8000)
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix_fmt
        if codec_tag:
            s.codec_tag = codec_tag
        if time_base is not None:
            s.time_base = time_base
            s.codec_context.time_base = time_base
        opts = {"threads": "1"}
        if codec in ("libx264", "libx265"):
            opts.update(preset="ultrafast")
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
        opts.update(options or {})
        s.codec_context.options = opts
        if rotation is not None:
            s.set_display_rotation(rotation)
        if audio_first:
            samples = np.zeros((1, 8000 * len(frames) // fps), np.int16)
            af = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            af.sample_rate = 8000
            for p in a.encode(af):
                c.mux(p)
            for p in a.encode():
                c.mux(p)
        fmt = "gray" if pix_fmt == "gray" else "rgb24"
        for t, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img[..., 0].copy() if fmt == "gray" else img, format=fmt)
            if pts is not None:
                vf.pts = pts[t]
                vf.time_base = time_base
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path
