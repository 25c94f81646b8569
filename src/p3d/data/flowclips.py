"""Flow clips computed on the fly: from decoded RGB frames to the flow model's input, on the model's device.

``p3d test``, ``extract`` and ``predict`` can feed a flow model from RGB videos without flow on disk.  The data
workers decode, for every flow field ``t`` of a clip, the two frames it needs (``flow_frame_indices``: frames
``f_t`` and ``f_t + 1``, interleaved, so ``2T`` frames per clip; any frame stride and the loop/pad policies of
short videos work alike), at the clip's ``spec.resize`` and uncropped, and ship them as uint8.  The main process
(:class:`FlowFromRGB`, the ``prepare`` hook of :func:`p3d.engine.inference.iter_video_outputs`) then runs, on the
model's device and batched over every pair of the batch:

1. grey conversion (:func:`p3d.flow.rgb_to_grey`, OpenCV's ``RGB2GRAY``),
2. TV-L1 (:func:`p3d.flow.pairs_flow`, OpenCV's defaults),
3. quantisation to uint8 flow images (:func:`p3d.flow.quantize_flow`, ``dense_flow``'s map, bound 20 px),
4. the centre crop ``spec.size`` of the test protocol,
5. :func:`p3d.data.transforms.to_model_input` (e.g. minus 128 for the released flow model).

The result equals what the same model reads from ``p3d flow --size H W`` files computed at ``spec.resize`` (the
same decoded frames, the same engine, the same quantisation and crop; asserted in the tests): flow is computed on
the whole resized frame and cropped afterwards, so the border of the crop sees the context it sees in stored flow.
A mirrored copy of a clip (``p3d extract --flip``) is made from the flow clip by :func:`p3d.data.transforms.hflip`
(x -> ``255 - x``), exactly as for stored flow; the RGB frames are never mirrored.

Public API::

    flow_frame_indices(fields (..., T)) -> (..., 2T) frame indices
    FlowFromRGB(bound=20.0, params=None, batch_size=None, compile=False)
        .flow_images(frames (N, 2T, H, W, 3) uint8) -> (N, T, H, W, 2) uint8
        .model_input(frames, spec) -> (N, 2, T, h, w) float, the model's input
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import Tensor

from p3d.data.transforms import to_model_input
from p3d.flow.compute import pairs_flow
from p3d.flow.images import FLOW_BOUND, quantize_flow, rgb_to_grey
from p3d.flow.tvl1 import TVL1Params
from p3d.spec import InputSpec

__all__ = ["FlowFromRGB", "flow_frame_indices", "model_input_fn"]


def flow_frame_indices(fields: np.ndarray) -> np.ndarray:
    """``(..., T)`` flow-field indices -> ``(..., 2T)`` frame indices ``f_0, f_0 + 1, f_1, f_1 + 1, ...``: field
    ``f`` is the flow from frame ``f`` to frame ``f + 1``."""
    f = np.asarray(fields, dtype=np.int64)
    if f.ndim < 1:
        raise ValueError(f"flow_frame_indices: expected (..., T) field indices, got shape {f.shape}")
    return np.stack([f, f + 1], axis=-1).reshape(*f.shape[:-1], 2 * f.shape[-1])


def _centre_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., H, W, C)`` -> the centre ``size`` window (the rule of :func:`p3d.data.transforms.center_crop`)."""
    h, w = size
    H, W = x.shape[-3], x.shape[-2]
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} does not fit frames of {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w, :]


@dataclass(frozen=True)
class FlowFromRGB:
    """How flow is computed on the fly (see the module docstring): the quantisation ``bound`` (px), the TV-L1
    ``params`` (OpenCV's defaults), ``batch_size`` pairs per TV-L1 call (default: 1 on CPU, 64 on a GPU) and
    ``compile`` (``torch.compile`` the iteration: a one-off compilation, then several times faster)."""

    bound: float = FLOW_BOUND
    params: TVL1Params | None = None
    batch_size: int | None = None
    compile: bool = False

    def flow_images(self, frames: Tensor) -> Tensor:
        """``(N, 2T, H, W, 3)`` uint8 RGB pairs (any device) -> ``(N, T, H, W, 2)`` uint8 flow images (x, y)."""
        if frames.dtype != torch.uint8 or frames.dim() != 5 or frames.shape[-1] != 3 or frames.shape[1] % 2:
            raise ValueError(
                f"flow from RGB: expected (N, 2T, H, W, 3) uint8 frame pairs, got {frames.dtype} {tuple(frames.shape)}"
            )
        n, p, h, w, _ = frames.shape
        grey = rgb_to_grey(frames).to(torch.float32)  # (N, 2T, H, W)
        flow = pairs_flow(
            grey[:, 0::2].reshape(-1, h, w),
            grey[:, 1::2].reshape(-1, h, w),
            self.params,
            batch_size=self.batch_size,
            compile=self.compile,
        )  # (N·T, 2, H, W) pixels
        q = quantize_flow(flow, self.bound)
        return q.view(n, p // 2, 2, h, w).permute(0, 1, 3, 4, 2)

    def model_input(self, frames: Tensor, spec: InputSpec) -> Tensor:
        """``(N, 2T, H, W, 3)`` uint8 RGB pairs -> the flow model's input ``(N, 2, T, h, w)`` (centre crop
        ``spec.size``, normalised by ``spec``)."""
        if spec.channel_order != "XY":
            raise ValueError(f"flow from RGB feeds a flow model (channel order XY), not {spec.channel_order}")
        return to_model_input(_centre_crop(self.flow_images(frames), spec.size), spec)


def model_input_fn(spec: InputSpec, flow_from_rgb: FlowFromRGB | None = None):
    """The device-side step from the uint8 clips a :class:`~p3d.data.VideoClipsDataset` (``raw=True``) ships to the
    model's input: :func:`~p3d.data.transforms.to_model_input`, or ``flow_from_rgb.model_input`` when the dataset
    ships RGB frame pairs for a flow model."""
    if flow_from_rgb is None:
        return partial(to_model_input, spec=spec)
    return partial(flow_from_rgb.model_input, spec=spec)
