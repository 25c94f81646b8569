"""Frames in, flow images out: grey conversion, the TSN/denseflow flow quantisation and the flow-aware flip.

**Grey.** Both engines see the same grey frames: :func:`rgb_to_grey` is OpenCV's ``cvtColor(RGB2GRAY)`` on uint8
bit for bit, ``Y = (9798 R + 19235 G + 3735 B + 2^14) >> 15`` (BT.601 weights 0.299 / 0.587 / 0.114 in 15-bit
fixed point, rounded; checked against ``cv2`` on all 2^24 colours in the tests).

**Quantisation.** The authors' flow models read "x and y direction grey-level flow images ... mean 128".  These
come from the TSN ``dense_flow`` tool (Wang et al., ECCV 2016; ``yjxiong/dense_flow``, kept as
``open-mmlab/denseflow``), whose ``convertFlowToImage`` maps each component ``v`` with bound ``b`` (20 px) to::

    q = 255 if v > b,  0 if v < -b,  else cvRound(255 (v + b) / (2 b))

``cvRound`` rounds half to even, so ``v = 0`` gives ``cvRound(127.5) = 128``: **128 is "no motion"**, which is why
the networks subtract a mean of 128.  :func:`dequantize_flow` inverts the linear map, ``v = q 2b / 255 - b``, so a
stored 128 reads back as ``+b / 255`` (0.078 px for ``b = 20``): the grid of representable values does not contain
0.  The round-trip error within ``[-b, b]`` is at most half a step, ``b / 255``.  (mmaction2's Python
``flow_to_img`` truncates instead of rounding and maps 0 to 127; this module follows ``dense_flow``.)

**Flip.** Mirroring a flow clip horizontally mirrors both images and negates the x component; on stored images
that is ``255 - q`` for x (TSN's ``GroupRandomHorizontalFlip`` inverts the x images).  Because the zero of the map
is 127.5, not 128, a still pixel (128) becomes 127 after a flip: the network input ``q - 128`` turns from 0 into -1
(-0.078 px of x motion after dequantisation).  The off-by-one is inherent to the stored format and matches what the
released models saw in training.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

__all__ = ["rgb_to_grey", "quantize_flow", "dequantize_flow", "flip_flow_images", "FLOW_BOUND"]

# dense_flow's default bound (-b=20 in its README and in TSN's extraction scripts), in pixels.
FLOW_BOUND = 20.0
# OpenCV's fixed-point RGB -> grey weights (imgproc color_rgb: R2GRAY/G2GRAY/B2GRAY, shift 15).
_GREY_WEIGHTS = (9798, 19235, 3735)
_GREY_SHIFT = 15

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _as_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name}: expected a numpy array or a torch tensor, got {type(x).__name__}")


def _like(result: torch.Tensor, original: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    return result.numpy() if isinstance(original, np.ndarray) else result


def rgb_to_grey(frames: ArrayT) -> ArrayT:
    """``(..., H, W, 3)`` uint8 RGB -> ``(..., H, W)`` uint8 grey, exactly OpenCV's ``cvtColor(RGB2GRAY)``.

    Accepts a numpy array or a torch tensor (any device) and returns the same kind.
    """
    x = _as_tensor(frames, "rgb_to_grey")
    if x.dim() < 3 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"rgb_to_grey: expected (..., H, W, 3) uint8 RGB, got shape {tuple(x.shape)} {x.dtype}")
    c = x.to(torch.int32)
    r, g, b = _GREY_WEIGHTS
    y = (c[..., 0] * r + c[..., 1] * g + c[..., 2] * b + (1 << (_GREY_SHIFT - 1))) >> _GREY_SHIFT
    return _like(y.to(torch.uint8), frames)  # type: ignore[return-value]


def _check_bound(bound: float) -> float:
    if not (isinstance(bound, (int, float)) and not isinstance(bound, bool) and 0 < bound < float("inf")):
        raise ValueError(f"bound: expected a positive number of pixels, got {bound!r}")
    return float(bound)


def quantize_flow(flow: ArrayT, bound: float = FLOW_BOUND) -> ArrayT:
    """Float flow (any shape, pixels) -> uint8 flow images, ``dense_flow``'s ``convertFlowToImage``.

    ``q = clip(round_half_even(255 (v + bound) / (2 bound)), 0, 255)``, evaluated in float64 as the C++ does, so
    0 -> 128, ``±bound`` and beyond -> 255 / 0.  NaN (never produced by the engines) maps to 128.  Numpy in, numpy
    out; tensor in, tensor out (same device).
    """
    bound = _check_bound(bound)
    x = _as_tensor(flow, "quantize_flow")
    if not x.dtype.is_floating_point:
        raise ValueError(f"quantize_flow: expected float flow in pixels, got {x.dtype}")
    v = torch.nan_to_num(x.to(torch.float64), nan=0.0)
    q = torch.round(255.0 * (v.clamp(-bound, bound) + bound) / (2.0 * bound))
    return _like(q.to(torch.uint8), flow)  # type: ignore[return-value]


def dequantize_flow(images: ArrayT, bound: float = FLOW_BOUND) -> ArrayT:
    """uint8 flow images -> float32 flow in pixels, ``v = q 2 bound / 255 - bound`` (the inverse linear map).

    128 reads back as ``bound / 255``, not 0 (see the module docstring).  Numpy in, numpy out; tensor in, tensor out.
    """
    bound = _check_bound(bound)
    q = _as_tensor(images, "dequantize_flow")
    if q.dtype != torch.uint8:
        raise ValueError(f"dequantize_flow: expected uint8 flow images, got {q.dtype}")
    v = q.to(torch.float64) * (2.0 * bound / 255.0) - bound
    return _like(v.to(torch.float32), images)  # type: ignore[return-value]


def flip_flow_images(images: ArrayT, channel_axis: int = -1) -> ArrayT:
    """Mirror uint8 flow images left-right: flip the width axis and replace x by ``255 - x``.

    ``channel_axis`` holds the components, x first (y and any further channels are only mirrored).  The width is
    the last spatial axis: ``-2`` for channel-last ``(..., H, W, C)`` (the default, as the data pipeline stores flow
    as the R, G channels of an image), ``-1`` for channel-first ``(..., C, H, W)``.  A still pixel (128) becomes 127:
    see the module docstring.  Returns a new array/tensor of the same kind.
    """
    q = _as_tensor(images, "flip_flow_images")
    if q.dtype != torch.uint8:
        raise ValueError(f"flip_flow_images: expected uint8 flow images, got {q.dtype}")
    if q.dim() < 3:
        raise ValueError(f"flip_flow_images: expected at least (C, H, W) or (H, W, C), got shape {tuple(q.shape)}")
    axis = channel_axis % q.dim()
    if q.shape[axis] < 2:
        raise ValueError(f"flip_flow_images: axis {channel_axis} has {q.shape[axis]} channel(s), need x and y")
    width_axis = q.dim() - 2 if axis == q.dim() - 1 else q.dim() - 1
    out = q.flip(width_axis)
    x = out.select(axis, 0)
    x.copy_(255 - x)
    return _like(out, images)  # type: ignore[return-value]
