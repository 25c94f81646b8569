"""One entry point from decoded RGB frames to the flow of consecutive pairs, with either engine."""

from __future__ import annotations

import numpy as np
import torch

from p3d.flow.images import rgb_to_grey
from p3d.flow.opencv import opencv_tvl1
from p3d.flow.tvl1 import TVL1Params, tvl1

__all__ = ["ENGINES", "compute_flow", "pairs_flow"]

ENGINES = ("tvl1", "opencv")


def _grey_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``(T+1, H, W, 3)`` RGB or ``(T+1, H, W)`` grey uint8 -> ``(T+1, H, W)`` uint8 CPU/device tensor."""
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        raise ValueError(f"compute_flow: frames must be a numpy array or a torch tensor, got {type(frames).__name__}")
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    rgb = x.dim() == 4 and x.shape[-1] == 3
    if x.dtype != torch.uint8 or not (rgb or x.dim() == 3):
        raise ValueError(
            f"compute_flow: expected (T+1, H, W, 3) RGB or (T+1, H, W) grey uint8 frames, got shape "
            f"{tuple(x.shape)} {x.dtype}"
        )
    if x.shape[0] < 2:
        raise ValueError(f"compute_flow: need at least 2 frames for one flow field, got {x.shape[0]}")
    return rgb_to_grey(x) if rgb else x


def compute_flow(
    frames: np.ndarray | torch.Tensor,
    engine: str = "tvl1",
    params: TVL1Params | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """TV-L1 optical flow between consecutive frames: ``(T+1, H, W, 3)`` uint8 RGB -> ``(T, 2, H, W)`` float32.

    ``flow[t]`` maps frame ``t`` onto frame ``t + 1`` (channel 0 = x, 1 = y, pixels; see :func:`p3d.flow.tvl1`).
    The frames are converted to grey as OpenCV's ``cvtColor(RGB2GRAY)`` does (``(T+1, H, W)`` grey uint8 is
    accepted as is), so both engines see the same input.

    ``engine="tvl1"``: the PyTorch engine on ``device`` (default CPU), ``batch_size`` pairs at a time (the result
    does not depend on it; default 1 on CPU, where one pair's state stays in cache, 64 on a GPU), ``compile=True``
    to fuse the inner loops with ``torch.compile`` (a one-off compilation per process, several times faster
    afterwards; see ``benchmarks/bench_flow.py``).  ``engine="opencv"``: OpenCV's
    ``DualTVL1OpticalFlow`` pair by pair on the CPU (needs ``pip install "p3d[flow]"``).  Both return the flow on
    ``device``.
    """
    if engine not in ENGINES:
        raise ValueError(f"compute_flow: engine must be one of {ENGINES}, got {engine!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if batch_size is None:
        batch_size = 1 if device.type == "cpu" else 64
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"compute_flow: batch_size must be a positive integer, got {batch_size!r}")
    grey = _grey_frames(frames)
    params = params or TVL1Params()
    if engine == "opencv":
        return opencv_tvl1(grey[:-1].cpu(), grey[1:].cpu(), params).to(device)
    grey = grey.to(device=device, dtype=torch.float32)
    return pairs_flow(grey[:-1], grey[1:], params, batch_size=batch_size, compile=compile)


def pairs_flow(
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    params: TVL1Params | None = None,
    batch_size: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """TV-L1 flow of the pairs ``(frames0[i], frames1[i])``: ``(N, H, W)`` grey (float, 0..255) -> ``(N, 2, H, W)``,
    ``batch_size`` pairs per :func:`p3d.flow.tvl1` call (default 1 on CPU, 64 elsewhere, as :func:`compute_flow`),
    on the frames' device."""
    if frames0.shape != frames1.shape or frames0.dim() != 3:
        raise ValueError(f"pairs_flow: expected two (N, H, W) stacks of equal shape, got {tuple(frames0.shape)} and "
                         f"{tuple(frames1.shape)}")  # fmt: skip
    if batch_size is None:
        batch_size = 1 if frames0.device.type == "cpu" else 64
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"pairs_flow: batch_size must be a positive integer, got {batch_size!r}")
    n = frames0.shape[0]
    parts = [
        tvl1(frames0[s : s + batch_size], frames1[s : s + batch_size], params, compile=compile)
        for s in range(0, n, batch_size)
    ]
    return torch.cat(parts)
