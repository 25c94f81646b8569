"""Which frames make a clip: pure functions from a frame count (and a seed) to frame indices.

The paper's protocol (Sec. 4.1): training takes one clip of 16 consecutive frames at a random position;
testing takes 20 clips spread uniformly over the video and averages their predictions.  ``stride`` takes
every ``stride``-th frame (a clip spans ``(clip_len - 1) * stride + 1`` frames).

A video (or segment) shorter than a clip follows ``short_policy``:

* ``"loop"`` (default): indices wrap around, ``0, 1, .., n-1, 0, 1, ..`` — the motion continues;
* ``"pad"``: the last frame is repeated, ``0, 1, .., n-1, n-1, ..``.

Every function takes the randomness explicitly (``rng``: a ``numpy.random.Generator`` or an int seed) and
returns a new ``int64`` array; nothing global is touched, so a run is reproducible.

Public API::

    sample_train_clip(num_frames, clip_len=16, stride=1, rng=0) -> (clip_len,) int64
    sample_test_clips(num_frames, num_clips=20, clip_len=16, stride=1) -> (num_clips, clip_len) int64
    test_clip_starts(num_frames, num_clips, span) -> (num_clips,) int64
"""

from __future__ import annotations

import numpy as np

SHORT_POLICIES = ("loop", "pad")


def _check(num_frames: int, clip_len: int, stride: int, short_policy: str) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if clip_len < 1 or stride < 1:
        raise ValueError(f"clip_len and stride must be >= 1, got clip_len={clip_len}, stride={stride}")
    if short_policy not in SHORT_POLICIES:
        raise ValueError(f"short_policy must be one of {SHORT_POLICIES}, got {short_policy!r}")


def as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    """``rng`` if it is a Generator, else a new one seeded with the int (``None`` is refused)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        raise ValueError("sampling needs an explicit rng or seed (got None)")
    return np.random.default_rng(rng)


def clip_span(clip_len: int, stride: int = 1) -> int:
    """Frames covered by one clip: ``(clip_len - 1) * stride + 1``."""
    return (clip_len - 1) * stride + 1


def clip_indices(start: int, num_frames: int, clip_len: int, stride: int = 1, short_policy: str = "loop") -> np.ndarray:
    """``(clip_len,)`` indices of the clip starting at ``start``, folded into ``[0, num_frames)``."""
    _check(num_frames, clip_len, stride, short_policy)
    idx = start + np.arange(clip_len, dtype=np.int64) * stride
    if short_policy == "loop":
        return np.mod(idx, num_frames)
    return np.minimum(idx, num_frames - 1)


def sample_train_clip(
    num_frames: int,
    clip_len: int = 16,
    stride: int = 1,
    rng: np.random.Generator | int = 0,
    short_policy: str = "loop",
) -> np.ndarray:
    """One clip at a uniformly random start: ``(clip_len,)`` int64 frame indices in ``[0, num_frames)``.

    A video shorter than the clip span starts at 0 and follows ``short_policy``.
    """
    _check(num_frames, clip_len, stride, short_policy)
    gen = as_generator(rng)
    span = clip_span(clip_len, stride)
    start = int(gen.integers(0, num_frames - span + 1)) if num_frames >= span else 0
    return clip_indices(start, num_frames, clip_len, stride, short_policy)


def test_clip_starts(num_frames: int, num_clips: int, span: int) -> np.ndarray:
    """``(num_clips,)`` start indices evenly spaced from the first to the last valid start (the middle one
    for a single clip; all 0 when the video is shorter than ``span``)."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    last_start = max(num_frames - span, 0)
    if num_clips == 1:
        return np.array([last_start // 2], dtype=np.int64)
    return np.round(np.linspace(0, last_start, num_clips)).astype(np.int64)


def sample_test_clips(
    num_frames: int,
    num_clips: int = 20,
    clip_len: int = 16,
    stride: int = 1,
    short_policy: str = "loop",
) -> np.ndarray:
    """``num_clips`` clips spread uniformly from the first to the last possible start (paper: 20 clips).

    Returns ``(num_clips, clip_len)`` int64 frame indices.  Deterministic (no randomness).
    """
    _check(num_frames, clip_len, stride, short_policy)
    starts = test_clip_starts(num_frames, num_clips, clip_span(clip_len, stride))
    return np.stack([clip_indices(int(s), num_frames, clip_len, stride, short_policy) for s in starts])


def offset_to_segment(indices: np.ndarray, segment: tuple[int, int]) -> np.ndarray:
    """Indices sampled in a segment of ``b - a`` frames mapped to absolute frame indices ``a + i``."""
    a, b = segment
    if not 0 <= a < b:
        raise ValueError(f"segment must satisfy 0 <= start < end, got {segment}")
    return np.asarray(indices, dtype=np.int64) + a
