"""Optical flow for the flow-stream models: TV-L1 in PyTorch (batched, any device) and OpenCV as the reference.

The authors' P3D-199 flow model was trained on Kinetics TV-L1 flow stored as "x and y direction grey-level flow
images ... mean 128" (TSN ``dense_flow`` convention, bound 20 px).  This package computes that flow itself::

    flow = compute_flow(frames)                 # (T+1, H, W, 3) uint8 RGB -> (T, 2, H, W) float32, pixels
    images = quantize_flow(flow)                # -> uint8, 128 = no motion
    flow = compute_flow(frames, engine="opencv")  # the reference engine (pip install "p3d[flow]")

Modules: :mod:`p3d.flow.tvl1` (the engine), :mod:`p3d.flow.opencv` (reference), :mod:`p3d.flow.images` (grey
conversion, quantisation, flip), :mod:`p3d.flow.compute` (the entry point), :mod:`p3d.flow.synthetic` (frames with
exactly known motion, for tests and benchmarks).  Depends on torch and numpy only;
``cv2`` is imported when the OpenCV engine is used.
"""

from p3d.flow.compute import ENGINES, compute_flow, pairs_flow
from p3d.flow.images import FLOW_BOUND, dequantize_flow, flip_flow_images, quantize_flow, rgb_to_grey
from p3d.flow.opencv import opencv_tvl1
from p3d.flow.tvl1 import TVL1Params, tvl1

__all__ = [
    "ENGINES",
    "FLOW_BOUND",
    "TVL1Params",
    "compute_flow",
    "dequantize_flow",
    "flip_flow_images",
    "opencv_tvl1",
    "pairs_flow",
    "quantize_flow",
    "rgb_to_grey",
    "tvl1",
]
