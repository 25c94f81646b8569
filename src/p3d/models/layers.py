"""The fast paths under the P3D blocks: convolutions on free views of channels-last activations, BatchNorm folded
into the convolution, and hand-written backward passes that keep the gradient in the same layout.

Tensors are ``(N, C, T, H, W)`` kept in ``torch.channels_last_3d`` memory.  Every convolution is computed as a 2D
convolution on a view of it (no copy): the 1×3×3 S and the 1×1×1 convs on frames ``(N·T, C, H, W)``, the 3×1×1 T on
``(N, C, T, H·W)``.  The parameters keep their 5D Caffe/``Conv3d`` shapes so state dicts read like any 3D network.
:mod:`p3d.models.blocks` composes these into the paper's blocks and reads like its equations; nothing here knows
what a P3D block is.

The formulation is one switch, ``P3D_CONV`` / :func:`set_conv_impl`: ``"views"`` (the 2D-on-views formulation
above, tuned for oneDNN on CPU) or ``"conv3d"`` (the same parameters through ``F.conv3d`` on the 5D tensor, which
is what cuDNN's 3D kernels are for).  Both compute the same function; the default is picked per device type
(:data:`DEFAULT_CONV_IMPL`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CONV_IMPLS",
    "DEFAULT_CONV_IMPL",
    "conv_impl",
    "set_conv_impl",
    "use_conv_impl",
    "frames",
    "unframes",
    "temporal_max_pool",
    "channels_last_grad",
    "channels_last_weight",
    "bn_scale_shift",
    "conv_bn",
    "relu",
    "add",
    "conv3d_views",
]

CONV_IMPLS = ("views", "conv3d")
_IMPL: str | None = os.environ.get("P3D_CONV") or None


def set_conv_impl(impl: str | None) -> None:
    """Choose how convolutions run: ``"views"``, ``"conv3d"``, or ``None`` for the per-device default (views on
    CPU, conv3d on CUDA).  The environment variable ``P3D_CONV`` sets the initial choice."""
    global _IMPL
    if impl is not None and impl not in CONV_IMPLS:
        raise ValueError(f"convolution implementation must be one of {CONV_IMPLS} or None, got {impl!r}")
    _IMPL = impl


# The per-device defaults.  "views" was measured fastest with oneDNN (BENCHMARKS.md, "Models"); on CUDA it is the
# default too until benchmarks/gpu_suite.py, which times both, has been run on a GPU.
DEFAULT_CONV_IMPL: dict[str, str] = {"cpu": "views", "cuda": "views"}


def conv_impl(device: torch.device | str = "cpu") -> str:
    """The implementation used for tensors on ``device``."""
    if _IMPL is not None:
        return _IMPL
    return DEFAULT_CONV_IMPL.get(torch.device(device).type, "views")


@contextlib.contextmanager
def use_conv_impl(impl: str | None) -> Iterator[None]:
    """Temporarily choose the convolution implementation (see :func:`set_conv_impl`)."""
    global _IMPL
    old = _IMPL
    set_conv_impl(impl)
    try:
        yield
    finally:
        _IMPL = old


if _IMPL is not None:
    set_conv_impl(_IMPL)  # validate the environment variable early


def frames(x: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` → ``(N·T, C, H, W)``; a view when ``x`` is channels_last_3d."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


def unframes(y: Tensor, n: int) -> Tensor:
    """``(N·T, C, H, W)`` → ``(N, C, T, H, W)``; the inverse of :func:`frames`."""
    nt, c, h, w = y.shape
    return y.reshape(n, nt // n, c, h, w).transpose(1, 2)


def _eager_backward(x: Tensor) -> bool:
    """Whether ``x``'s backward will run in eager autograd, where the hand-written backward passes below pay
    off; tracing, scripting, ``torch.compile`` and export see the plain ops (and fuse them themselves)."""
    return (
        torch.is_grad_enabled()
        and x.requires_grad
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.compiler.is_compiling()
    )


def _frame_pairs(x: Tensor) -> tuple[Tensor, Tensor]:
    """Even and odd frames of a channels_last_3d ``(N, C, T, H, W)`` as ``(N, T/2, H·W·C)`` views (no copy)."""
    n, c, t, h, w = x.shape
    v = x.permute(0, 2, 3, 4, 1).reshape(n, t // 2, 2, h * w * c)
    return v[:, :, 0], v[:, :, 1]


def _unpairs(y: Tensor, shape: torch.Size) -> Tensor:
    """``(N, T', H·W·C)`` contiguous → ``(N, C, T', H, W)`` channels_last_3d view."""
    n, c, _, h, w = shape
    return y.view(n, -1, h, w, c).permute(0, 4, 1, 2, 3)


class _TemporalMaxPool(torch.autograd.Function):
    """Kernel-2 stride-2 max over time whose backward routes the gradient with a saved 1-byte mask and hands it
    on in channels_last_3d (autograd's own backward of ``maximum`` on strided frame views builds masks with four
    element-wise passes and scatters into a contiguous NCDHW gradient, which then costs a layout copy at every
    conv below it)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        a, b = _frame_pairs(x.contiguous(memory_format=torch.channels_last_3d))
        first = a >= b
        ctx.save_for_backward(first)
        ctx.shape = x.shape
        return _unpairs(torch.where(first, a, b), x.shape)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        (first,) = ctx.saved_tensors
        n, c, t, h, w = ctx.shape
        g = g.permute(0, 2, 3, 4, 1).reshape(n, t // 2, h * w * c)
        zero = g.new_zeros(())
        pairs = torch.stack((torch.where(first, g, zero), torch.where(first, zero, g)), dim=2)
        return pairs.view(n, t, h, w, c).permute(0, 4, 1, 2, 3)


def temporal_max_pool(x: Tensor) -> Tensor:
    """Max-pool time by 2 (kernel 2, stride 2) as the ``Pooling3D`` layers ``3a_pool``/``4a_pool``/``res5a_pool``.

    Caffe pools with ceil rounding, so a single remaining frame passes through unchanged (that is what makes
    8-frame clips valid).  ``T`` must otherwise be even; the trunk checks clip lengths at its input.
    Computed as one element-wise maximum of the even and odd frames of the channels-last layout (each a block
    of contiguous memory), far cheaper than a generic 3D pooling kernel; the result is channels_last_3d.
    """
    if x.shape[2] == 1:
        return x
    if _eager_backward(x):
        return _TemporalMaxPool.apply(x)
    a, b = _frame_pairs(x.contiguous(memory_format=torch.channels_last_3d))
    return _unpairs(torch.maximum(a, b), x.shape)


class _ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands the gradient on in channels_last_3d.  Autograd's backward of a global
    mean materialises a contiguous NCDHW gradient; placed at the head, this keeps the whole backward pass in
    the trunk's layout instead of paying a layout copy at every conv."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:
        return g.contiguous(memory_format=torch.channels_last_3d)


def channels_last_grad(x: Tensor) -> Tensor:
    """``x``, with its gradient (if any) delivered channels_last_3d; see :class:`_ChannelsLastGrad`."""
    return _ChannelsLastGrad.apply(x) if _eager_backward(x) else x


def channels_last_weight(conv: nn.Conv3d) -> None:
    """Store a 1×k×k / k×1×1 kernel channels-last, so that the 4D view given to ``F.conv2d`` is already in the
    layout oneDNN wants for channels-last activations (otherwise every call copies the weight).  Names, shapes
    and values are unchanged; ``load_state_dict`` copies into the existing layout."""
    conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last_3d))


def _in_place_ok(x: Tensor) -> bool:
    """In-place ops save memory passes, but not on a view that autograd tracks: there autograd rebuilds the
    view's base in backward and hands a contiguous NCDHW gradient to every conv below (a layout copy each).
    Conv outputs are views here (``unframes``), BN outputs are not.  Under ``torch.compile`` the out-of-place op is
    used (the compiler fuses it, and inspecting views would break the graph)."""
    if torch.compiler.is_compiling():
        return False
    return not (x.requires_grad and x._is_view())


def relu(x: Tensor) -> Tensor:
    """ReLU of ``x``; overwrites ``x`` when that is free (``x`` must not be needed afterwards)."""
    return x.relu_() if _in_place_ok(x) else F.relu(x)


def add(x: Tensor, y: Tensor, alpha: float = 1.0, beta: float = 1.0) -> Tensor:
    """``alpha·x + beta·y``; overwrites ``x`` when that is free (``x`` must not be needed afterwards).

    The common weightings cost no extra pass: ``alpha == beta`` is computed as ``alpha·(x + y)``."""
    if alpha == beta:
        s = x.add_(y) if _in_place_ok(x) else x + y
        return s if alpha == 1.0 else s.mul_(alpha)
    if _in_place_ok(x):
        return x.mul_(alpha).add_(y, alpha=beta)
    return torch.add(x * alpha, y, alpha=beta)


def bn_scale_shift(bn: nn.BatchNorm3d) -> tuple[Tensor, Tensor]:
    """BatchNorm with its running statistics as the per-channel affine map ``y ↦ scale·y + shift``:
    ``scale = γ/√(σ² + ε)``, ``shift = β − μ·scale`` (``γ = 1``, ``β = 0`` without affine parameters)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics (track_running_stats=False) has no fixed affine map")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def conv_bn(conv: nn.Conv3d, bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(conv(x))`` in one convolution whenever ``bn`` normalises with its running statistics.

    In evaluation, and for the BatchNorms frozen during fine-tuning (paper Sec. 4.1; ``frozen: true`` in the
    deploy files), BN is the affine map of :func:`bn_scale_shift`.  It is folded into this call's kernel and bias —
    a pass over the weights instead of a pass over the activations (forward and backward); gradients reach the
    conv weights through the fold exactly.  A BN in training mode runs as usual.
    """
    if not isinstance(bn, nn.BatchNorm3d) or bn.training or bn.running_var is None:
        return bn(conv(x))
    scale, shift = bn_scale_shift(bn)
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv._conv_forward(x, conv.weight * scale.view(-1, 1, 1, 1, 1), shift)


def conv3d_views(conv: nn.Conv3d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """A 1×k×k or k×1×1 ``Conv3d`` computed as a 2D convolution on a free view of ``x`` (see the module
    docstring), or as ``F.conv3d`` when the ``"conv3d"`` implementation is chosen for ``x``'s device."""
    kt, kh, kw = conv.kernel_size
    st, sh, sw = conv.stride
    pt, ph, pw = conv.padding
    if conv_impl(x.device) == "conv3d":
        return F.conv3d(x, weight, bias, conv.stride, conv.padding)
    if kt == 1 and st == 1 and pt == 0:  # spatial (and 1×1×1): a 2D conv on every frame
        y = F.conv2d(frames(x), weight.squeeze(2), bias, (sh, sw), (ph, pw))
        return unframes(y, x.shape[0])
    if kh == kw == 1 and ph == pw == 0:  # temporal: a conv over time on (N, C, T, H·W)
        if sh > 1 or sw > 1:
            x = x[:, :, :, ::sh, ::sw]
        n, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(n, c, t, h * w), weight.squeeze(-1), bias, (st, 1), (pt, 0))
        return y.reshape(n, -1, y.shape[2], h, w)
    return F.conv3d(x, weight, bias, conv.stride, conv.padding)
