"""Memory a run needs, checked against what the machine has before anything large is allocated.

A clip size, batch or number of clips that cannot fit must be refused up front with the estimate and the limit,
not discovered as an allocation traceback, a kernel OOM kill after minutes, or (in training) every video reported
"unreadable" because decoding ran out of memory.

The estimate has three parts:

* **activations** of one forward pass (inference) or what a forward pass keeps for the backward pass (training),
  measured once per architecture on a narrow copy of the model (``width`` 8, same depth, pattern, style and input
  channels) on a ``T × 32 × 32`` clip by following every tensor the operators allocate and free
  (:class:`_PeakTracker`), then scaled to the real width (activations grow linearly with it) and to the clip's
  ``T·H·W`` (they grow linearly with the pixels);
* **parameters** (inference: the model and its BN-folded copy; training: weights, gradients and SGD momentum);
* **decode buffers** in host memory: every video in flight holds its clips as uint8 frames
  (``clips × T × H × W × 3``), the one being decoded at the resize size.

The available memory is ``MemAvailable`` of ``/proc/meminfo`` (capped by a cgroup limit) for the host and
``torch.cuda.mem_get_info`` for a CUDA device.  The estimate errs low (it leaves out allocator overhead and
library workspaces), so a size it refuses cannot run, and normal sizes are never refused.

Public API::

    estimate_inference(model, spec, batch_size=8, num_clips=20, flip=False, num_workers=0, device="cpu")
    estimate_training(model, spec, batch_size=16, num_workers=0, device="cpu")      -> MemoryEstimate
    check_memory(estimate, what="p3d extract")   # raises MemoryLimitError (one line: estimate and limit)
    available_memory(device) -> (bytes, where) | None
    activation_bytes(model, (C, T, H, W), train=False) -> bytes per clip
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from p3d.errors import MemoryLimitError
from p3d.spec import InputSpec

__all__ = [
    "MemoryEstimate",
    "activation_bytes",
    "available_memory",
    "check_memory",
    "estimate_inference",
    "estimate_training",
    "format_bytes",
]

# Width of the narrow copy the activations are measured on: every stage keeps its depth and strides, channels
# shrink 8× for the default width 64, so the measurement costs a fraction of a real forward.
PROBE_WIDTH = 8
# Frame size of the measurement: every stride of the registry's models divides it, so activations scale exactly
# with H·W from here to any size (P3D/ResNet: 32 px is res5's 1×1; C3D pools adaptively).
PROBE_SIZE = 32
# DataLoader batches each worker keeps ready (p3d.data.build_loader's prefetch_factor in test/extract/train).
PREFETCH = 2


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units: ``"512.0 MiB"``, ``"23.4 GiB"``, ``"1.9 TiB"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale or unit == "MiB":
            return f"{n / scale:.1f} {unit}"
    raise AssertionError  # unreachable


class _PeakTracker(TorchDispatchMode):
    """Follows the storages operators allocate (views share their base's) and when they are freed; ``peak`` is the
    most bytes alive at once.  Tensors that exist before the mode (input, parameters) are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}  # storage address -> tensors alive on it
        self._bytes: dict[int, int] = {}

    @classmethod
    def _should_skip_dynamo(cls) -> bool:  # nothing here is compiled; skipping would import torch._dynamo (seconds)
        return False

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= self._bytes.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self._refs:
                if key in inputs or storage.nbytes() == 0:  # in place, a view of an outside tensor, or empty
                    continue
                self._refs[key], self._bytes[key] = 0, storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
            self._refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def _narrow_copy_options(model: nn.Module) -> tuple[str, dict[str, Any], float] | None:
    """``(architecture, options, width ratio)`` of a narrow copy of a registry model, or None for other models."""
    from p3d.models import list_models

    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None or cfg.architecture not in list_models():
        return None
    options = {k: v for k, v in cfg.options.items() if k != "input_spec"}
    width = int(options.get("width") or 64)
    narrow = min(PROBE_WIDTH, width)
    options["width"] = narrow
    options["num_classes"] = min(int(options.get("num_classes") or 0), 8)
    return cfg.architecture, options, width / narrow


@functools.lru_cache(maxsize=32)
def _measure(architecture: str, options: tuple[tuple[str, Any], ...], train: bool) -> tuple[float, int]:
    """Peak activation bytes per clip of a narrow registry model on a ``T × 32 × 32`` clip, and that ``T·H·W``."""
    from p3d.models import create_model

    opts = {k: (list(v) if isinstance(v, tuple) else v) for k, v in options}
    with torch.random.fork_rng(devices=[]):  # building the copy must not move the caller's random stream
        net = create_model(architecture, **opts)
    spec = net.input_spec
    t, h, w = spec.clip_len, min(PROBE_SIZE, spec.size[0]), min(PROBE_SIZE, spec.size[1])
    batch = 2 if train else 1  # BatchNorm in training needs more than one value per channel
    x = torch.zeros(batch, spec.channels, t, h, w)
    tracker = _PeakTracker()
    net.train(train)
    # Training peaks at the end of the forward pass, when every activation the backward pass needs is held;
    # from there the backward pass frees them as it goes while the weight gradients (counted with the weights)
    # appear.  So the forward pass under autograd is the measurement.
    with torch.enable_grad() if train else torch.inference_mode(), tracker:
        net(x)
    return tracker.peak / batch, t * h * w


def activation_bytes(model: nn.Module, clip_shape: tuple[int, int, int, int], *, train: bool = False) -> int:
    """Peak activation bytes one clip ``(C, T, H, W)`` needs in ``model`` (float32): a forward pass in inference,
    what the forward pass keeps for backward in training.  Measured on a narrow copy (see the module docstring);
    0 for a model outside the registry."""
    narrow = _narrow_copy_options(model)
    if narrow is None:
        return 0
    arch, options, ratio = narrow
    per_clip, pixels = _measure(arch, tuple(sorted((k, _hashable(v)) for k, v in options.items())), train)
    _, t, h, w = clip_shape
    return int(per_clip * ratio * (t * h * w) / pixels)


def _hashable(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def _parameter_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _amp_factor(amp: bool | str | None) -> float:
    """Activations in bfloat16/float16 take half the bytes."""
    return 1.0 if amp in (False, None, "none") else 0.5


def _workers(num_workers: int | str | None, device: torch.device) -> int:
    """Decoding workers the run may start; ``"auto"`` (sized from measured rates) is bounded by every core but
    the main process's, the most :func:`~p3d.data.loader.plan_loader` gives."""
    from p3d.data.loader import _cores, default_num_workers

    if num_workers == "auto":
        return max(1, _cores() - 1)
    if isinstance(num_workers, str):
        raise ValueError(f"num_workers must be an integer, None or 'auto', got {num_workers!r}")
    return default_num_workers(device) if num_workers is None else max(0, int(num_workers))


def _clip_pixels(spec: InputSpec) -> tuple[int, int]:
    """uint8 bytes of one clip as shipped (cropped) and as decoded (at the resize size)."""
    t, (h, w), (rh, rw) = spec.clip_len, spec.size, spec.resize
    return t * h * w * 3, t * max(rh, h) * max(rw, w) * 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs, by part: ``device`` on the model's device, ``host`` in host memory (the same pool on
    a CPU run)."""

    device: torch.device
    parts: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)
    detail: str = ""

    def needs(self) -> list[tuple[torch.device, int, dict[str, int]]]:
        """``[(device, bytes, parts)]`` per memory pool."""
        if self.device.type == "cpu":
            return [(self.device, sum(self.parts.values()) + sum(self.host.values()), {**self.parts, **self.host})]
        return [
            (self.device, sum(self.parts.values()), self.parts),
            (torch.device("cpu"), sum(self.host.values()), self.host),
        ]


def estimate_inference(
    model: nn.Module,
    spec: InputSpec | None = None,
    *,
    batch_size: int,
    num_clips: int = 1,
    flip: bool = False,
    num_workers: int | None = 0,
    device: torch.device | str = "cpu",
    amp: bool | str | None = False,
    decoding: bool = True,
) -> MemoryEstimate:
    """Memory of clip-batched inference (``p3d test``/``predict``/``extract``): ``batch_size`` clips per forward
    pass, ``num_clips`` per video (doubled by ``flip``), videos decoded by ``num_workers`` processes (each keeps
    :data:`PREFETCH` videos ready).  ``decoding=False``: the clips come from elsewhere (export, summary)."""
    device = torch.device(device)
    spec = spec or model.input_spec
    c, t, (h, w) = spec.channels, spec.clip_len, spec.size
    per_clip = activation_bytes(model, (c, t, h, w)) * _amp_factor(amp)
    parts = {
        "activations": int(batch_size * per_clip),
        "input": batch_size * c * t * h * w * 4,
        "weights": 2 * _parameter_bytes(model),  # the model and its BN-folded copy
    }
    host: dict[str, int] = {}
    if decoding:
        clips = num_clips * (2 if flip else 1)
        shipped, decoded = _clip_pixels(spec)
        workers = _workers(num_workers, device)
        in_flight = 1 + workers * PREFETCH  # videos decoded and waiting, plus the one being consumed
        host["decode buffers"] = in_flight * clips * shipped + max(1, workers) * num_clips * decoded
        host["clip queue"] = (batch_size + clips) * shipped
    detail = f"{batch_size} clip(s) of {c}×{t}×{h}×{w} per pass" + (
        f", {num_clips} clips per video" if decoding else ""
    )
    return MemoryEstimate(device, parts, host, detail)


def estimate_training(
    model: nn.Module,
    spec: InputSpec | None = None,
    *,
    batch_size: int,
    num_workers: int | None = 0,
    device: torch.device | str = "cpu",
    amp: bool | str | None = False,
) -> MemoryEstimate:
    """Memory of a training step: ``batch_size`` clips through forward and backward, weights with gradients and
    momentum, and the decoding workers' prefetched batches (float32 clips) and frames at the resize size."""
    device = torch.device(device)
    spec = spec or model.input_spec
    c, t, (h, w) = spec.channels, spec.clip_len, spec.size
    per_clip = activation_bytes(model, (c, t, h, w), train=True) * _amp_factor(amp)
    parts = {
        "activations": int(batch_size * per_clip),
        "input": batch_size * c * t * h * w * 4,
        "weights, gradients, momentum": 3 * _parameter_bytes(model),
    }
    _, decoded = _clip_pixels(spec)
    workers = _workers(num_workers, device)
    batches = 1 + workers * PREFETCH
    host = {"decode buffers": batches * batch_size * c * t * h * w * 4 + max(1, workers) * decoded}
    return MemoryEstimate(device, parts, host, f"{batch_size} clip(s) of {c}×{t}×{h}×{w} per step")


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return int(text) if text.isdigit() else None


def _host_available() -> tuple[int, str] | None:
    """MemAvailable of /proc/meminfo, capped by the cgroup (v2 or v1) limit minus its usage."""
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append((int(line.split()[1]) * 1024, "MemAvailable"))
    for limit, usage in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        lim, used = _read_int(limit), _read_int(usage)
        if lim is not None and used is not None and lim < 2**60:
            found.append((max(0, lim - used), "cgroup memory limit"))
    return min(found) if found else None


def available_memory(device: torch.device | str = "cpu") -> tuple[int, str] | None:
    """``(bytes, where)`` free for new allocations on ``device``, or None when unknown (then nothing is refused).
    ``P3D_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix) replaces the host figure, e.g. to leave room for other
    jobs on a shared machine."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free, f"free memory on {device}"
    env = os.environ.get("P3D_MEMORY_LIMIT")
    if env:
        return _parse_size(env), "P3D_MEMORY_LIMIT"
    if device.type != "cpu":
        return None
    return _host_available()


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    num, unit = (s[:-1], s[-1]) if s and s[-1] in units else (s, "")
    try:
        value = float(num) * units[unit]
    except ValueError:
        raise ValueError(f"P3D_MEMORY_LIMIT={text!r}: expected bytes, e.g. 8000000000 or 8G") from None
    if not value > 0:
        raise ValueError(f"P3D_MEMORY_LIMIT={text!r}: must be positive")
    return int(value)


HINT = "use a smaller clip size, batch size or number of clips"


def check_memory(estimate: MemoryEstimate, what: str = "this run", hint: str = HINT) -> None:
    """Raise :class:`~p3d.errors.MemoryLimitError` when a pool of ``estimate`` exceeds what is available; the one
    line gives the estimate by part, the limit, where it was read and ``hint``."""
    for device, need, parts in estimate.needs():
        avail = available_memory(device)
        if avail is None or need <= avail[0]:
            continue
        limit, where = avail
        by_part = ", ".join(f"{k} {format_bytes(v)}" for k, v in parts.items() if v)
        detail = f"; {estimate.detail}" if estimate.detail else ""
        pool = "host" if device.type == "cpu" else str(device)
        raise MemoryLimitError(
            f"{what} needs about {format_bytes(need)} of {pool} memory ({by_part}{detail}) but "
            f"{format_bytes(limit)} is available ({where}); {hint}"
        )
