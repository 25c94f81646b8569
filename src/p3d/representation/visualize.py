"""Class knowledge visualisation (paper, Sec. 5, Fig. 5): DeepDraw-style gradient ascent on an input clip.

Starting from noise, the clip is changed to maximise one class's pre-softmax score (the logit), with the
regularisers DeepDraw uses (Auduno, 2016; building on Simonyan et al. 2014 and Mordvintsev et al. 2015):

* **stepwise upscaling (octaves)**: the clip is parameterised by a low-resolution canvas, bilinearly
  upsampled to the model's input size for every forward pass; after each octave the canvas is upsampled
  to the next resolution (``octave_sizes``), so coarse structure forms first and detail is added later;
* **random jitter**: every step shifts the canvas by a random offset in space (and time), with wrap-around,
  before the forward pass and shifts the gradient back, so no pattern can rely on exact pixel positions;
* **per-step blur**: after every update the canvas is smoothed by a Gaussian in space whose sigma decays
  linearly from ``blur_start`` to ``blur_end`` over an octave;
* the step is the gradient divided by its mean absolute value (scale-free), and values are clamped to the
  range the model's preprocessing can produce from uint8 pixels.

The model's input size never changes (C3D's fully connected layers need it), so this works for every model
of the registry.  Output: an animated GIF (PIL) or MP4 (PyAV, H.264) of the clip and a PNG strip of frames.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p3d.spec import InputSpec


@dataclass(frozen=True)
class DeepDrawConfig:
    """Settings of :func:`deepdraw`. Sizes are canvas ``(H, W)`` per octave (None: size/4, size/2, size)."""

    steps_per_octave: int = 40
    octave_sizes: tuple[tuple[int, int], ...] | None = None
    lr: float = 0.03  # step per iteration in normalised input units (~2 of 255 grey levels for ImageNet std)
    jitter: int = 4  # pixels of random spatial shift (canvas pixels)
    time_jitter: int = 1  # frames of random temporal shift
    blur_start: float = 1.0  # Gaussian sigma, canvas pixels
    blur_end: float = 0.3
    init_std: float = 0.1  # noise std in normalised input units
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps_per_octave < 1 or self.lr <= 0:
            raise ValueError(f"need steps_per_octave >= 1 and lr > 0, got {self.steps_per_octave}, {self.lr}")
        if self.blur_start < 0 or self.blur_end < 0 or self.jitter < 0 or self.time_jitter < 0:
            raise ValueError("blur sigmas and jitter must be >= 0")


@dataclass
class DeepDrawResult:
    """``clip``: ``(C, T, H, W)`` in normalised input units; ``frames``: ``(T, H, W, 3)`` uint8 RGB;
    ``scores``: the class logit before every step and after the last."""

    clip: Tensor
    frames: np.ndarray
    scores: list[float] = field(default_factory=list)


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur over H and W of ``(N, C, T, H, W)`` (reflect padding)."""
    if sigma < 0.05:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, tt, h, w = x.shape
    y = x.permute(0, 2, 1, 3, 4).reshape(n * tt * c, 1, h, w)
    pad_h, pad_w = min(r, h - 1), min(r, w - 1)
    y = F.pad(y, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    kh = k[r - pad_h : r + pad_h + 1] if pad_h < r else k
    kw = k[r - pad_w : r + pad_w + 1] if pad_w < r else k
    y = F.conv2d(y, (kh / kh.sum()).view(1, 1, -1, 1))
    y = F.conv2d(y, (kw / kw.sum()).view(1, 1, 1, -1))
    return y.reshape(n, tt, c, h, w).permute(0, 2, 1, 3, 4)


def input_range(spec: InputSpec) -> tuple[Tensor, Tensor]:
    """Per-channel ``(low, high)`` ``(1, C, 1, 1, 1)`` of normalised inputs made from 0..255 pixels."""
    mean = torch.tensor(spec.mean, dtype=torch.float32)
    std = torch.tensor(spec.std, dtype=torch.float32)
    lo = (0.0 * spec.scale - mean) / std
    hi = (255.0 * spec.scale - mean) / std
    return torch.minimum(lo, hi).view(1, -1, 1, 1, 1), torch.maximum(lo, hi).view(1, -1, 1, 1, 1)


def to_frames(clip: Tensor, spec: InputSpec) -> np.ndarray:
    """Normalised ``(C, T, H, W)`` -> ``(T, H, W, 3)`` uint8 RGB (undoes scale/mean/std and BGR order; a
    two-channel flow clip is shown as x in red, y in green, blue 128)."""
    mean = torch.tensor(spec.mean).view(-1, 1, 1, 1)
    std = torch.tensor(spec.std).view(-1, 1, 1, 1)
    x = ((clip.detach().cpu().float() * std + mean) / spec.scale).clamp(0, 255)
    if spec.channel_order == "BGR":
        x = x.flip(0)
    elif spec.channel_order == "XY":
        x = torch.cat([x[:2], torch.full_like(x[:1], 128.0)])
    return (x.permute(1, 2, 3, 0).numpy() + 0.5).astype(np.uint8)


def deepdraw(
    model: nn.Module, class_index: int, cfg: DeepDrawConfig = DeepDrawConfig(), device: str | torch.device = "cpu"
) -> DeepDrawResult:
    """Gradient ascent on the logit of ``class_index`` (module docstring).  The model is left unchanged."""
    spec: InputSpec = model.input_spec
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and not 0 <= class_index < num_classes:
        raise ValueError(f"class index {class_index} outside the model's {num_classes} classes")
    device = torch.device(device)
    model = model.to(device)
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    h, w = spec.size
    sizes = cfg.octave_sizes or tuple((max(8, h // d), max(8, w // d)) for d in (4, 2, 1))
    gen = torch.Generator().manual_seed(cfg.seed)
    lo, hi = (v.to(device) for v in input_range(spec))
    t = spec.clip_len
    canvas = (torch.randn(1, spec.channels, t, *sizes[0], generator=gen) * cfg.init_std).to(device)
    scores: list[float] = []

    def score_of(c: Tensor) -> Tensor:
        x = F.interpolate(c, size=(t, h, w), mode="trilinear", align_corners=False)
        return model(x)[0, class_index]

    try:
        for o, size in enumerate(sizes):
            if o > 0:
                canvas = F.interpolate(canvas, size=(t, *size), mode="trilinear", align_corners=False)
            for step in range(cfg.steps_per_octave):
                dy, dx = (int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen))
                dt = int(torch.randint(-cfg.time_jitter, cfg.time_jitter + 1, (1,), generator=gen))
                c = torch.roll(canvas, shifts=(dt, dy, dx), dims=(2, 3, 4)).requires_grad_(True)
                with torch.enable_grad():
                    s = score_of(c)
                    (g,) = torch.autograd.grad(s, c)
                scores.append(float(s.detach()))
                g = torch.roll(g, shifts=(-dt, -dy, -dx), dims=(2, 3, 4))
                canvas = canvas + cfg.lr / (g.abs().mean() + 1e-12) * g
                frac = step / max(1, cfg.steps_per_octave - 1)
                canvas = _gaussian_blur(canvas, cfg.blur_start + (cfg.blur_end - cfg.blur_start) * frac)
                canvas = torch.maximum(torch.minimum(canvas, hi), lo)
        with torch.no_grad():
            scores.append(float(score_of(canvas)))
            clip = F.interpolate(canvas, size=(t, h, w), mode="trilinear", align_corners=False)[0]
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
        model.train(was_training)
    return DeepDrawResult(clip.cpu(), to_frames(clip, spec), scores)


def _atomic_path(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")


def write_animation(frames: np.ndarray, out: str | os.PathLike[str], fps: int = 8, scale: int = 1) -> Path:
    """``(T, H, W, 3)`` uint8 as an animated ``.gif`` (PIL, looping) or ``.mp4`` (PyAV, H.264), atomically."""
    out = Path(out)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if scale > 1:
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    tmp = _atomic_path(out)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        imgs = [Image.fromarray(f) for f in frames]
        imgs[0].save(tmp, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    elif suffix == ".mp4":
        import av

        h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sizes
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.options = {"crf": "16", "preset": "veryfast"}
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:h, :w]))))
            container.mux(stream.encode())
    else:
        raise ValueError(f"{out}: animation must be .gif or .mp4")
    os.replace(tmp, out)
    return out


def write_strip(frames: np.ndarray, out: str | os.PathLike[str], max_frames: int = 8, scale: int = 1) -> Path:
    """A PNG of up to ``max_frames`` evenly chosen frames side by side (2-pixel white gaps), atomically."""
    from PIL import Image

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"{out}: the frame strip is written as PNG")
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    sel = [frames[i].repeat(scale, 0).repeat(scale, 1) for i in idx]
    h, w = sel[0].shape[:2]
    strip = np.full((h, len(sel) * (w + 2) - 2, 3), 255, np.uint8)
    for k, f in enumerate(sel):
        strip[:, k * (w + 2) : k * (w + 2) + w] = f
    tmp = _atomic_path(out)
    Image.fromarray(strip).save(tmp, format="PNG")
    os.replace(tmp, out)
    return out


def class_index_of(name_or_index: str, class_names: Sequence[str] | None) -> int:
    """An integer, or a class name looked up in ``class_names``."""
    try:
        return int(name_or_index)
    except ValueError:
        if class_names and name_or_index in class_names:
            return list(class_names).index(name_or_index)
        raise ValueError(f"class {name_or_index!r} is not an index and not a known class name") from None
