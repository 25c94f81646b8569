"""From decoded uint8 frames to the normalised float clip a model expects (given its :class:`InputSpec`).

Protocol of the paper (Sec. 4.1), the defaults of ``InputSpec``: every frame resized to 182x242 (H x W);
training takes a random 160x160 crop and a random horizontal flip; testing takes the centre crop.  Then
``(reorder(x) * scale - mean) / std``: ImageNet mean/std on 0..1 RGB, or the Caffe per-channel mean
(104, 117, 123) on 0..255 BGR for the authors' released models; ``"XY"`` (two-channel flow stored as the
R and G channels of an image) keeps the first two channels.

Resizing is cheapest while decoding (FFmpeg's swscale does it in the RGB conversion), so datasets pass
``ClipTransform.decode_size`` to :meth:`VideoReader.get_frames`; frames of another size are resized here
with the same scaler.  Cropping and flipping work on uint8 before the float conversion.

Optical flow clips (``channel_order == "XY"``) are ``(T, H, W, 2)`` uint8 flow images, x then y (the quantised
images of :mod:`p3d.flow.images`, 128 = no motion).  They are resized, cropped and flipped as frames are, the
TSN convention the released flow model was trained with: each image is resized with the same bilinear scaler
(the stored values, displacements in pixels of the size the flow was computed at, are not rescaled), and a
horizontal flip mirrors both images and replaces x by ``255 - x`` (:func:`p3d.flow.flip_flow_images`, the one
implementation of the flow flip).

Public API::

    ClipTransform(spec, train)(frames (T, H, W, 3|2) uint8, rng) -> torch.float32 (C, T, h, w)
    ClipTransform(spec, train).crop_flip(frames, rng) -> (T, h, w, 3|2) uint8
    resize_frames(frames, (H, W)) -> (T, H, W, 3|2) uint8
    normalize(frames (T, H, W, 3|2) uint8, spec) -> torch.float32 (C, T, H, W)
    hflip_frames(frames (..., T, H, W, C) uint8 tensor or array, spec) -> mirrored (flow: x -> 255 - x)
    to_model_input(frames uint8 (..., T, H, W, 3) tensor on any device, spec) -> float (..., C, T, H, W)
"""

from __future__ import annotations

import av
import numpy as np
import torch

from p3d.data.sampling import as_generator
from p3d.flow.images import flip_flow_images
from p3d.spec import InputSpec


def resize_frames(frames: np.ndarray, size: tuple[int, int], interpolation: str = "BILINEAR") -> np.ndarray:
    """Resize ``(T, H, W, 3)`` uint8 RGB frames (or ``(T, H, W, 2)`` flow images, one plane at a time) to
    ``size=(H', W')`` with FFmpeg's swscale."""
    _check_frames(frames)
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    c = frames.shape[-1]
    out = np.empty((frames.shape[0], h, w, c), dtype=np.uint8)
    for t, img in enumerate(frames):
        if c == 3:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            out[t] = vf.to_ndarray(width=w, height=h, format="rgb24", interpolation=interpolation)
            continue
        for k in range(c):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img[..., k]), format="gray")
            out[t, ..., k] = vf.reformat(width=w, height=h, interpolation=interpolation).to_ndarray()
    return out


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] not in (2, 3):
        shape = getattr(frames, "shape", type(frames).__name__)
        raise ValueError(f"expected frames as a (T, H, W, 3) uint8 array (flow: (T, H, W, 2)), got {shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {frames.dtype}")


def crop(frames: np.ndarray, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    """``frames[:, top:top+h, left:left+w]`` with bounds checked."""
    h, w = size
    H, W = frames.shape[1:3]
    if h > H or w > W or top < 0 or left < 0 or top + h > H or left + w > W:
        raise ValueError(f"crop {h}x{w} at ({top}, {left}) does not fit frames of {H}x{W}")
    return frames[:, top : top + h, left : left + w]


def center_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    H, W = frames.shape[1:3]
    return crop(frames, (H - size[0]) // 2, (W - size[1]) // 2, size)


def random_crop(frames: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The same random ``size`` window on every frame (a clip is cropped as one volume)."""
    H, W = frames.shape[1:3]
    if size[0] > H or size[1] > W:
        raise ValueError(f"crop {size[0]}x{size[1]} larger than frames of {H}x{W}")
    top = int(rng.integers(0, H - size[0] + 1))
    left = int(rng.integers(0, W - size[1] + 1))
    return crop(frames, top, left, size)


def to_model_input(frames: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 frames ``(..., T, H, W, 3)`` (or ``(..., T, H, W, 2)`` flow images) on any device → the float clip
    ``(..., C, T, H, W)`` = ``(reorder(x) * scale - mean) / std``, computed where the frames are.

    The pipeline ships uint8 clips (4× less data than float32 through worker pipes, pinned memory and the PCIe bus)
    and normalises them on the model's device; a batch ``(N, T, H, W, C)`` becomes ``(N, C, T, H, W)`` in
    ``channels_last_3d`` memory, the layout the P3D trunk runs in, without a copy before the float conversion.
    """
    if frames.dtype != torch.uint8 or frames.dim() < 4 or frames.shape[-1] not in (2, 3):
        raise ValueError(f"expected uint8 frames (..., T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if spec.channel_order != "XY" and frames.shape[-1] != 3:
        raise ValueError(f"{spec.channel_order} input needs 3-channel frames, got {tuple(frames.shape)} (flow images?)")
    x = frames
    if spec.channel_order == "BGR":
        x = x.flip(-1)
    elif spec.channel_order == "XY":
        x = x[..., :2]
    n = x.dim()
    x = x.permute(*range(n - 4), n - 1, n - 4, n - 3, n - 2).to(torch.float32)  # (..., C, T, H, W)
    shape = (-1, 1, 1, 1)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device).view(shape)
    inv_std = 1.0 / torch.tensor(spec.std, dtype=torch.float32, device=x.device).view(shape)
    return (x * float(spec.scale) - mean) * inv_std


def normalize(frames: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """``(T, H, W, 3)`` uint8 RGB (flow: ``(T, H, W, 2)``) -> ``(C, T, H, W)`` float32
    ``(reorder(x) * scale - mean) / std``."""
    _check_frames(frames)
    return to_model_input(torch.from_numpy(np.ascontiguousarray(frames)), spec).contiguous()


def hflip_frames(frames: torch.Tensor | np.ndarray, spec: InputSpec) -> torch.Tensor | np.ndarray:
    """Horizontal mirror of uint8 frames ``(..., T, H, W, C)`` (a tensor or an array; a new one of the same kind);
    for optical flow (``channel_order == "XY"``) the stored x image ``v`` also becomes ``255 - v`` (mirroring
    reverses horizontal motion; TSN/denseflow): :func:`p3d.flow.flip_flow_images`."""
    if spec.channel_order == "XY":
        return flip_flow_images(frames, channel_axis=-1)
    if isinstance(frames, np.ndarray):
        return np.ascontiguousarray(frames[..., ::-1, :])
    return frames.flip(-2)


def hflip(clips: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """Horizontal mirror of normalised clips ``(..., C, T, H, W)``.

    For optical flow (``channel_order == "XY"``) mirroring the image also reverses horizontal motion: the stored
    x image ``v`` becomes ``255 - v`` (TSN/denseflow convention), which in normalised units is
    ``x' = (255·scale − 2·mean_x)/std_x − x``; y is only mirrored.
    """
    out = clips.flip(-1)
    if spec.channel_order == "XY":
        m, sd, s = spec.mean[0], spec.std[0], spec.scale
        x = out[..., 0, :, :, :]
        out[..., 0, :, :, :] = (255.0 * s - 2.0 * m) / sd - x
    return out


class ClipTransform:
    """uint8 RGB frames ``(T, H, W, 3)`` (flow: ``(T, H, W, 2)`` images) -> normalised clip ``(C, T, h, w)``
    float32 for ``spec``.

    ``train=True``: resize to ``spec.resize``, random crop ``spec.size``, random horizontal flip (p=0.5; for flow
    also ``x -> 255 - x``, :func:`hflip_frames`).
    ``train=False``: resize to ``spec.resize``, centre crop ``spec.size``.  The randomness comes from the
    ``rng`` passed to each call (a ``numpy.random.Generator`` or an int seed).
    """

    def __init__(self, spec: InputSpec, train: bool, flip: bool = True) -> None:
        if spec.size[0] > spec.resize[0] or spec.size[1] > spec.resize[1]:
            raise ValueError(f"crop size {spec.size} is larger than the resize target {spec.resize}")
        self.spec = spec
        self.train = train
        self.flip = flip and train

    @property
    def decode_size(self) -> tuple[int, int]:
        """``(H, W)`` to ask the decoder for, so that no separate resize is needed."""
        return tuple(self.spec.resize)  # type: ignore[return-value]

    def crop_flip(self, frames: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """Resize (if needed), crop and flip: ``(T, H, W, C)`` uint8 -> ``(T, h, w, C)`` uint8."""
        _check_frames(frames)
        frames = resize_frames(frames, self.decode_size)
        if not self.train:
            return center_crop(frames, self.spec.size)
        gen = as_generator(rng)
        frames = random_crop(frames, self.spec.size, gen)
        if self.flip and gen.random() < 0.5:
            frames = hflip_frames(frames, self.spec)
        return frames

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | int | None = None) -> torch.Tensor:
        return normalize(self.crop_flip(frames, rng), self.spec)

    def __repr__(self) -> str:
        mode = "train: random crop + flip" if self.train else "test: centre crop"
        return f"ClipTransform({self.spec.resize} -> {self.spec.size}, {mode}, {self.spec.channel_order})"
