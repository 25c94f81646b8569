"""Reading weight files safely, auditing what a load did, and initialising P3D from a 2D ImageNet ResNet.

Paper Sec. 3.3: the spatial convs of P3D come from a 2D ResNet pre-trained on ImageNet; the temporal convs are
new.  :func:`load_2d_resnet` takes a ResNet-50/101/152 state dict in the torchvision/timm key layout (``conv1``,
``bn1``, ``layerN.M.conv1..3``/``bn1..3``, ``layerN.0.downsample.0/1``, ``fc``) from ``.pth``/``.pt`` (read with
``weights_only=True``: nothing in the file is executed) or ``.safetensors``:

* 3×3 kernels become the 1×3×3 kernels of S, 1×1 kernels the 1×1×1 convs, BN layers carry over;
* ``conv1`` is inflated from 7×7 to 1×7×7; for a 2-channel (optical flow) model the RGB filters are averaged
  over colour and replicated (cross-modality initialisation);
* ``fc`` is kept when the class count matches and dropped otherwise;
* the temporal convs are initialised by :func:`p3d.models.resnet.init_temporal`.

Every missing, unexpected and mis-shaped key is listed in a :class:`LoadReport`; with ``strict=True`` (the
default) a file that does not fit the architecture is an error that prints that report.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from p3d.errors import WeightLoadError
from p3d.models.resnet import P3DResNet, init_temporal

__all__ = ["LoadReport", "read_torch_file", "read_state_dict", "unwrap_state_dict", "load_2d_resnet"]


@dataclass
class LoadReport:
    """What a weight load did, key by key."""

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)  # copied with a reshape (2D → 3D kernels)
    initialised: list[str] = field(default_factory=list)  # new in the target, initialised on purpose
    skipped: list[str] = field(default_factory=list)  # present in both, left alone on purpose (e.g. fc)
    missing: list[str] = field(default_factory=list)  # expected by the model, absent from the file
    unexpected: list[str] = field(default_factory=list)  # in the file, unused by the model
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched)

    def __str__(self) -> str:
        lines = [
            f"load report for {self.source or '<state dict>'}: {len(self.loaded)} loaded, "
            f"{len(self.inflated)} inflated 2D→3D, {len(self.initialised)} newly initialised, "
            f"{len(self.skipped)} skipped, {len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.mismatched)} mis-shaped"
        ]
        for title, keys in (
            ("skipped", self.skipped),
            ("missing", self.missing),
            ("unexpected", self.unexpected),
        ):
            if keys:
                lines.append(
                    f"  {title}: " + ", ".join(keys[:40]) + (f", … ({len(keys)} in all)" if len(keys) > 40 else "")
                )
        for k, want, got in self.mismatched[:40]:
            lines.append(f"  mis-shaped: {k}: model {list(want)}, file {list(got)}")
        return "\n".join(lines)


def read_torch_file(path: str | Path) -> object:
    """The object in a torch file, read with ``weights_only=True`` (nothing in the file is executed) and memory-mapped
    where the file allows it.  Errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightLoadError(f"{path}: the file is empty")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightLoadError(
            f"{path}: refusing to load — the file needs more than tensors and plain containers to unpickle "
            f"(weights_only=True rejected it: {str(e).splitlines()[0]}). Loading it fully would execute code "
            f"from the file; if you trust it, re-save just its state dict with torch.save(sd, 'clean.pth')."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise WeightLoadError(f"{path}: not a readable PyTorch weight file ({e})") from e


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Unwraps the usual containers (``{"state_dict": …}``, ``{"model": …}``, ``{"model_state": …}``) and the
    ``module.`` prefix that DistributedDataParallel adds.  Errors name the file and the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    if path.stat().st_size == 0:
        raise WeightLoadError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightLoadError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        sd = unwrap_state_dict(read_torch_file(path), path)
    if not sd:
        raise WeightLoadError(f"{path}: holds no tensors")
    return sd


def unwrap_state_dict(obj: object, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside a loaded torch object (containers and DDP's ``module.`` prefix removed)."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
            for key in ("state_dict", "model", "model_state", "model_state_dict", "net"):
                if key in obj and isinstance(obj[key], Mapping):
                    obj = obj[key]
                    break
            else:
                break
    if not isinstance(obj, Mapping):
        raise WeightLoadError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}"
        )
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    if not sd:
        raise WeightLoadError(f"{path}: holds no tensors")
    return sd


def load_2d_resnet(
    model: P3DResNet,
    source: str | Path | Mapping[str, Tensor],
    temporal_init: str = "identity",
    strict: bool = True,
) -> LoadReport:
    """Initialise ``model`` from a 2D ImageNet ResNet (see the module docstring).  Returns the report."""
    if not isinstance(model, P3DResNet):
        raise TypeError(f"load_2d_resnet needs a P3DResNet, got {type(model).__name__}")
    name = str(source) if isinstance(source, (str, Path)) else "<state dict>"
    sd = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    if f"{model.pretrained_cfg.first_conv}.weight" not in sd or not any(k.startswith("layer1.0.conv1") for k in sd):
        raise WeightLoadError(
            f"{name}: does not look like a 2D ResNet in the torchvision/timm layout (no 'conv1.weight' and "
            f"'layer1.0.conv1.weight'); first keys: {list(sd)[:5]}"
        )
    cfg = model.pretrained_cfg
    head, stem = f"{cfg.classifier}.", f"{cfg.first_conv}.weight"
    report = LoadReport(source=name)
    target = model.state_dict()
    new: dict[str, Tensor] = {}
    for key, want in target.items():
        if ".conv_t." in key or ".bn_t." in key:
            report.initialised.append(key)
            continue
        if key not in sd:
            report.missing.append(key)
            continue
        got = sd[key]
        if key.startswith(head):
            if got.shape == want.shape:
                new[key] = got
                report.loaded.append(key)
            else:
                report.skipped.append(f"{key} (file {list(got.shape)}, model {list(want.shape)}: class count differs)")
            continue
        value = _inflate(got, want, average_channels=key == stem)
        if value is None:
            report.mismatched.append((key, tuple(want.shape), tuple(got.shape)))
            continue
        new[key] = value
        (report.loaded if value.shape == got.shape else report.inflated).append(key)
    report.unexpected = [k for k in sd if k not in target]
    if strict and not report.ok:
        raise WeightLoadError(f"{name}: does not fit {cfg.architecture}\n{report}")
    with torch.no_grad():
        for key, value in new.items():
            target[key].copy_(value.to(target[key].dtype))
    init_temporal(model, temporal_init)
    return report


def _inflate(got: Tensor, want: Tensor, average_channels: bool = False) -> Tensor | None:
    """A file tensor in the model's shape: as is, or a 2D kernel given a singleton time axis; None if neither.
    ``average_channels`` (the first conv): RGB filters may be averaged onto another input channel count."""
    if got.shape == want.shape:
        return got
    if got.dim() == 4 and want.dim() == 5 and want.shape[2] == 1:
        g = got
        if average_channels and g.shape[1] != want.shape[1]:
            # RGB filters onto another channel count (2-channel optical flow): average, then replicate.
            g = g.mean(dim=1, keepdim=True).expand(-1, want.shape[1], -1, -1)
        if g.shape == want.shape[:2] + want.shape[3:]:
            return g.unsqueeze(2).contiguous()
    return None
