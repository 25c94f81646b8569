"""OpenCV's TV-L1 (``cv2.optflow.DualTVL1OpticalFlow``) as the reference engine.

OpenCV ships TV-L1 in the contrib modules, so this engine needs ``opencv-contrib-python-headless`` (the ``flow``
extra of p3d).  ``cv2`` is imported lazily, only when the engine is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from p3d.flow.tvl1 import TVL1Params

__all__ = ["import_cv2", "opencv_tvl1"]


def import_cv2() -> Any:
    """``cv2`` with the contrib ``optflow`` module, or an ``ImportError`` naming the extra to install."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError('the OpenCV flow engine needs OpenCV with contrib modules: pip install "p3d[flow]"') from e
    if not hasattr(cv2, "optflow"):
        raise ImportError(
            "the OpenCV flow engine needs cv2.optflow (contrib modules), which this OpenCV lacks: "
            'pip uninstall opencv-python opencv-python-headless && pip install "p3d[flow]"'
        )
    return cv2


def _create(cv2: Any, params: TVL1Params) -> Any:
    return cv2.optflow.DualTVL1OpticalFlow_create(
        tau=params.tau,
        lambda_=params.lambda_,
        theta=params.theta,
        nscales=params.nscales,
        warps=params.warps,
        epsilon=params.epsilon,
        innnerIterations=params.inner_iterations,
        outerIterations=params.outer_iterations,
        scaleStep=params.scale_step,
        gamma=params.gamma,
        medianFiltering=params.median_filtering,
        useInitialFlow=False,
    )


def _as_cv_input(frame: np.ndarray) -> np.ndarray:
    """OpenCV reads uint8 as 0..255 and float32 as 0..1 (``calc`` multiplies floats by 255)."""
    if frame.dtype == np.uint8:
        return np.ascontiguousarray(frame)
    return np.ascontiguousarray(frame, dtype=np.float32) / np.float32(255.0)


def opencv_tvl1(
    frames0: torch.Tensor | np.ndarray, frames1: torch.Tensor | np.ndarray, params: TVL1Params | None = None
) -> torch.Tensor:
    """TV-L1 flow of each pair with OpenCV, one pair at a time on the CPU.

    ``frames0, frames1``: ``(N, H, W)`` grey frames, uint8 or float with values in 0..255 (tensor or array).
    Returns ``(N, 2, H, W)`` float32 CPU tensor, channel 0 = x, channel 1 = y displacement in pixels.
    """
    params = params or TVL1Params()
    a = frames0.detach().cpu().numpy() if isinstance(frames0, torch.Tensor) else np.asarray(frames0)
    b = frames1.detach().cpu().numpy() if isinstance(frames1, torch.Tensor) else np.asarray(frames1)
    if a.ndim != 3 or a.shape != b.shape:
        raise ValueError(f"opencv_tvl1: expected two (N, H, W) stacks of equal shape, got {a.shape} and {b.shape}")
    if a.dtype != b.dtype or not (a.dtype == np.uint8 or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"opencv_tvl1: frames must be both uint8 or both float, got {a.dtype} and {b.dtype}")
    cv2 = import_cv2()
    n, h, w = a.shape
    out = np.empty((n, 2, h, w), dtype=np.float32)
    for i in range(n):
        # A fresh solver per pair: calc() lowers the object's nscales for small frames and never raises it again.
        flow = _create(cv2, params).calc(_as_cv_input(a[i]), _as_cv_input(b[i]), None)
        out[i] = flow.transpose(2, 0, 1)
    return torch.from_numpy(out)
