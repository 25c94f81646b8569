"""What a model expects at its input: the preprocessing that must travel with its weights.

Kept free of torch so the data pipeline and the CLI can read it cheaply.  Every model of the registry
carries one (``model.input_spec``); a converted Caffe model carries the Caffe one, so ``p3d predict`` applies
BGR order and the (104, 117, 123) mean without the user having to know.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The authors' deploy files: per-frame mean in BGR order, 0..255 values, no std (shared/reference/README.md).
CAFFE_BGR_MEAN = (104.0, 117.0, 123.0)
FLOW_MEAN = (128.0, 128.0)


@dataclass(frozen=True)
class InputSpec:
    """Expected input of a video model.

    A uint8 frame ``x`` (0..255, RGB as decoded) becomes ``(reorder(x) * scale - mean) / std`` with
    ``reorder`` giving ``channel_order``.  Clips are ``(C, T, H, W)`` with ``T = clip_len`` and
    ``(H, W) = size``; training resizes to ``resize`` (H, W) first and crops ``size`` (paper, Sec. 4.1).
    """

    clip_len: int = 16
    size: tuple[int, int] = (160, 160)
    resize: tuple[int, int] = (182, 242)
    channels: int = 3
    channel_order: str = "RGB"  # "RGB", "BGR" or "XY" (two-channel optical flow)
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    frame_stride: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR", "XY"):
            raise ValueError(f"channel_order must be 'RGB', 'BGR' or 'XY', got {self.channel_order!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean/std need {self.channels} values (one per channel), got {len(self.mean)}/{len(self.std)}"
            )
        if self.clip_len < 1 or min(self.size) < 1:
            raise ValueError(f"clip_len and size must be positive, got {self.clip_len}, {self.size}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["resize"] = list(self.resize)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown InputSpec fields: {sorted(unknown)}")
        kw = dict(d)
        for k in ("size", "resize", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def replace(self, **changes: Any) -> InputSpec:
        return InputSpec.from_dict({**self.to_dict(), **changes})


def imagenet_rgb(clip_len: int = 16, size: int | tuple[int, int] = 160) -> InputSpec:
    """ImageNet mean/std on 0..1 RGB: what 2D ImageNet ResNets (torchvision/timm) were trained with."""
    s = (size, size) if isinstance(size, int) else tuple(size)
    return InputSpec(clip_len=clip_len, size=s)


def caffe_bgr(clip_len: int = 16, size: int | tuple[int, int] = 160) -> InputSpec:
    """The authors' released P3D models: BGR, 0..255, mean (104, 117, 123), no std."""
    s = (size, size) if isinstance(size, int) else tuple(size)
    return InputSpec(
        clip_len=clip_len, size=s, channel_order="BGR", scale=1.0, mean=CAFFE_BGR_MEAN, std=(1.0, 1.0, 1.0)
    )


def caffe_flow(clip_len: int = 16, size: int | tuple[int, int] = 160) -> InputSpec:
    """The authors' optical-flow models: two channels (x, y) stored as 0..255 images, minus 128."""
    s = (size, size) if isinstance(size, int) else tuple(size)
    return InputSpec(
        clip_len=clip_len, size=s, channels=2, channel_order="XY", scale=1.0, mean=FLOW_MEAN, std=(1.0, 1.0)
    )


def flow_unit(channels: int = 2, clip_len: int = 16, size: int | tuple[int, int] = 160) -> InputSpec:
    """Optical flow stored as 0..255 images (128 = no motion), mapped to [-1, 1]: for flow models trained here."""
    if channels != 2:
        raise ValueError(
            f"a non-RGB model needs 2 channels (optical flow x, y) or an explicit InputSpec, got {channels}"
        )
    s = (size, size) if isinstance(size, int) else tuple(size)
    return InputSpec(clip_len=clip_len, size=s, channels=2, channel_order="XY", mean=(0.5, 0.5), std=(0.5, 0.5))
