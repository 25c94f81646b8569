"""p3d: Pseudo-3D Residual Networks (Qiu, Yao & Mei, ICCV 2017) for video.

``import p3d`` is light; the model API is imported on first use (``p3d.create_model``, ``p3d.list_models``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"create_model", "load_model", "list_models", "summarize", "load_2d_resnet"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from p3d import models

        return getattr(models, name)
    raise AttributeError(f"module 'p3d' has no attribute {name!r}")
