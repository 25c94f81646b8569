"""The P3D building blocks (paper Sec. 3.1, Fig. 3), with the semantics of the authors' deploy files.

Ground truth is ``shared/reference/official-p3d/deploy_p3d_resnet_*.prototxt``; for a residual unit ``res2b``:

* ``res2b_branch2a`` (1×1×1 reduce) → ``bn2b_branch2a`` → ReLU
* S = ``res2b_branch2b`` (1×3×3) → ``bn2b_branch2b`` → ReLU (always: the ReLU runs in place on the S blob, so
  every consumer of S sees it rectified)
* T = ``res2b_branch2b_t`` (3×1×1) → ``bn2b_branch2b_t``; a ReLU follows T only in P3D-A
  (``res2a_branch2b_t_relu``); B and C add T *before* rectifying, in ``res2b_branch2b_st`` (Eltwise SUM,
  coefficients 1, 1 for B and 0.5, 0.5 for C) followed by ``res2b_branch2b_st_relu``
* ``res2b_branch2c`` (1×1×1 expand) → ``bn2b_branch2c``; ``res2b`` = shortcut + that; ``res2b_relu``.

Tensors are ``(N, C, T, H, W)``.  Activations are kept in ``torch.channels_last_3d`` memory and every conv is
computed as a 2D convolution on a free view of it: S and the 1×1×1 convs on frames ``(N·T, C, H, W)``, T on
``(N, C, T, H·W)``.  On CPU this is what oneDNN runs fastest (see BENCHMARKS.md); the parameters keep their 5D
Caffe/Conv3d shapes so state dicts read like any 3D network.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SpatialConv",
    "TemporalConv",
    "PointwiseConv",
    "Bottleneck",
    "P3DA",
    "P3DB",
    "P3DC",
    "Bottleneck2D",
    "BLOCKS",
    "frames",
    "unframes",
    "temporal_max_pool",
]


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


def _channels_last_weight(conv: nn.Conv3d) -> None:
    """Store a 1×k×k / k×1×1 kernel channels-last, so that the 4D view given to ``F.conv2d`` is already in the
    layout oneDNN wants for channels-last activations (otherwise every call copies the weight).  Names, shapes
    and values are unchanged; ``load_state_dict`` copies into the existing layout."""
    conv.weight = nn.Parameter(conv.weight.detach().contiguous(memory_format=torch.channels_last_3d))


def _inplace_ok(x: Tensor) -> bool:
    """In-place ops save memory passes, but not on a view that autograd tracks: there autograd rebuilds the
    view's base in backward and hands a contiguous NCDHW gradient to every conv below (a layout copy each).
    Conv outputs are views here (``unframes``), BN outputs are not."""
    return not (x.requires_grad and x._is_view())


def relu_(x: Tensor) -> Tensor:
    """ReLU, in place where that is free (see :func:`_inplace_ok`)."""
    return x.relu_() if _inplace_ok(x) else F.relu(x)


def add_(x: Tensor, y: Tensor) -> Tensor:
    """``x + y``, in place into ``x`` where that is free (see :func:`_inplace_ok`)."""
    return x.add_(y) if _inplace_ok(x) else x + y


def conv_bn(conv: nn.Conv3d, bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(conv(x))`` in one convolution whenever ``bn`` normalises with its running statistics.

    In evaluation, and for the BatchNorms frozen during fine-tuning (paper Sec. 4.1; ``frozen: true`` in the
    deploy files), BN is the per-channel affine map ``γ·(y − μ)/√(σ² + ε) + β``.  It is folded into this call's
    kernel and bias — a pass over the weights instead of a pass over the activations (forward and backward);
    gradients reach the conv weights through the fold exactly.  A BN in training mode runs as usual.
    """
    if not isinstance(bn, nn.BatchNorm3d) or bn.training or bn.running_var is None or bn.weight is None:
        return bn(conv(x))
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    return conv._conv_forward(x, conv.weight * scale.view(-1, 1, 1, 1, 1), shift)


class PointwiseConv(nn.Conv3d):
    """1×1×1 convolution (``*_branch2a``, ``*_branch2c``, ``*_branch1``), optionally strided in space."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return unframes(F.conv2d(frames(x), weight.flatten(2).unsqueeze(-1), bias, self.stride[1]), x.shape[0])


class SpatialConv(nn.Conv3d):
    """S: the 1×3×3 convolution of P3D (``*_branch2b``: kernel 1×3×3, pad 0×1×1, no bias).

    ``kernel_size=7`` gives the stem (``conv1``: 1×7×7, stride 1×2×2, pad 0×3×3).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        p = kernel_size // 2
        super().__init__(
            in_channels,
            out_channels,
            (1, kernel_size, kernel_size),
            (1, stride, stride),
            (0, p, p),
            bias=False,
        )
        _channels_last_weight(self)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        y = F.conv2d(frames(x), weight.squeeze(2), bias, self.stride[1:], self.padding[1:])
        return unframes(y, x.shape[0])


class TemporalConv(nn.Conv3d):
    """T: the 3×1×1 convolution of P3D (``*_branch2b_t``: kernel 3×1×1, pad 1×0×0, no bias).

    ``stride`` subsamples space; only the ``"pytorch"`` style needs it, in a strided P3D-B unit where T reads
    the unstrided input in parallel with a strided S.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, (3, 1, 1), (1, stride, stride), (1, 0, 0), bias=False)
        _channels_last_weight(self)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        s = self.stride[1]
        if s > 1:
            x = x[:, :, :, ::s, ::s]
        n, c, t, h, w = x.shape
        y = F.conv2d(x.reshape(n, c, t, h * w), weight.squeeze(-1), bias, 1, (1, 0))
        return y.reshape(n, -1, t, h, w)


class Bottleneck(nn.Module):
    """A ResNet bottleneck: 1×1×1 reduce, the block's middle (:meth:`residual`), 1×1×1 expand, shortcut.

    Parameter names follow torchvision's ``Bottleneck`` (``conv1``/``bn1``, ``conv2``/``bn2``, ``conv3``/``bn3``,
    ``downsample``) so 2D ImageNet weights map one-to-one; P3D adds ``conv_t``/``bn_t``.

    ``style="caffe"`` puts the spatial stride on ``conv1`` (``res3a_branch2a`` has stride 1×2×2), ``"pytorch"``
    on the 3×3 (S), as torchvision/timm ResNets.
    """

    expansion: ClassVar[int] = 4
    kind: ClassVar[str] = ""
    temporal: ClassVar[bool] = True

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        style: str = "caffe",
    ) -> None:
        super().__init__()
        if style not in ("caffe", "pytorch"):
            raise ValueError(f"style must be 'caffe' or 'pytorch', got {style!r}")
        s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = PointwiseConv(inplanes, planes, s1)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = SpatialConv(planes, planes, s2)
        self.bn2 = nn.BatchNorm3d(planes)
        if self.temporal:
            # In B, T reads the block input in parallel with S, so it must follow S's stride.
            self.conv_t = TemporalConv(planes, planes, s2 if self.kind == "B" else 1)
            self.bn_t = nn.BatchNorm3d(planes)
        self.conv3 = PointwiseConv(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.downsample = downsample

    def spatial(self, x: Tensor) -> Tensor:
        """relu(bn2(S(x))): the S path, rectified in every block type (``*_branch2b_relu``)."""
        return relu_(conv_bn(self.conv2, self.bn2, x))

    def temporal_conv(self, x: Tensor) -> Tensor:
        """bn_t(T(x)), not rectified: A adds its ReLU, B and C rectify after the sum."""
        return conv_bn(self.conv_t, self.bn_t, x)

    def residual(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        out = relu_(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv3, self.bn3, self.residual(out))
        return relu_(add_(out, identity))


class P3DA(Bottleneck):
    """P3D-A, cascaded: x + T(S(x)) (paper Eq. 3).

    ``res2a_branch2b`` → ReLU → ``res2a_branch2b_t`` → ``bn2a_branch2b_t`` → ``res2a_branch2b_t_relu``.
    """

    kind = "A"

    def residual(self, x: Tensor) -> Tensor:
        return relu_(self.temporal_conv(self.spatial(x)))


class P3DB(Bottleneck):
    """P3D-B, parallel: x + S(x) + T(x) (paper Eq. 4).

    S and T both read ``bn2b_branch2a``; ``res2b_branch2b_st`` = relu(S) + T (coefficients 1, 1), then ReLU.
    """

    kind = "B"

    def residual(self, x: Tensor) -> Tensor:
        s = self.spatial(x)
        return relu_(add_(self.temporal_conv(x), s))  # into bn_t's output, which nothing saves


class P3DC(Bottleneck):
    """P3D-C, cascaded with a direct path: x + S(x) + T(S(x)) (paper Eq. 5).

    T reads the rectified S; ``res2c_branch2b_st`` averages the two paths (Eltwise coefficients 0.5, 0.5), then
    ReLU.  The port sums them instead, which doubles the scale the following layers see.
    """

    kind = "C"

    def residual(self, x: Tensor) -> Tensor:
        s = self.spatial(x)
        t = self.temporal_conv(s)
        return relu_(add_(t, s).mul_(0.5))  # into bn_t's output (or a fresh sum), which nothing saves


class Bottleneck2D(Bottleneck):
    """A plain 2D ResNet bottleneck applied to every frame: res5 of P3D (``res5a_branch2b`` is 3×3, after the
    ``res5a_reshape`` to 4D), and every unit of the frame-level 2D baselines."""

    kind = "S"
    temporal = False

    def residual(self, x: Tensor) -> Tensor:
        return self.spatial(x)


BLOCKS: dict[str, type[Bottleneck]] = {"A": P3DA, "B": P3DB, "C": P3DC, "S": Bottleneck2D}
