"""The P3D building blocks (paper Sec. 3.1, Fig. 3), with the semantics of the authors' deploy files.

Ground truth is ``shared/reference/official-p3d/deploy_p3d_resnet_*.prototxt``; for a residual unit ``res2b``:

* ``res2b_branch2a`` (1×1×1 reduce) → ``bn2b_branch2a`` → ReLU
* S = ``res2b_branch2b`` (1×3×3) → ``bn2b_branch2b`` → ReLU (always: the ReLU runs in place on the S blob, so
  every consumer of S sees it rectified)
* T = ``res2b_branch2b_t`` (3×1×1) → ``bn2b_branch2b_t``; a ReLU follows T only in P3D-A
  (``res2a_branch2b_t_relu``); B and C add T *before* rectifying, in ``res2b_branch2b_st`` (Eltwise SUM,
  coefficients 1, 1 for B and 0.5, 0.5 for C) followed by ``res2b_branch2b_st_relu``
* ``res2b_branch2c`` (1×1×1 expand) → ``bn2b_branch2c``; ``res2b`` = shortcut + that; ``res2b_relu``.

Tensors are ``(N, C, T, H, W)``.  How the convolutions run (channels-last views, BN folded into the conv) lives in
:mod:`p3d.models.layers`; here each block's :meth:`~Bottleneck.residual` is the paper's residual function.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from p3d.models.layers import add, channels_last_weight, conv3d_views, conv_bn, relu

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
]


class PointwiseConv(nn.Conv3d):
    """1×1×1 convolution (``*_branch2a``, ``*_branch2c``, ``*_branch1``), optionally strided in space."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv3d_views(self, x, weight, bias)


class SpatialConv(nn.Conv3d):
    """S: the 1×3×3 convolution of P3D (``*_branch2b``: kernel 1×3×3, pad 0×1×1, no bias).

    ``kernel_size=7`` gives the stem (``conv1``: 1×7×7, stride 1×2×2, pad 0×3×3).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        p = kernel_size // 2
        k = (1, kernel_size, kernel_size)
        super().__init__(in_channels, out_channels, k, (1, stride, stride), (0, p, p), bias=False)
        channels_last_weight(self)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv3d_views(self, x, weight, bias)


class TemporalConv(nn.Conv3d):
    """T: the 3×1×1 convolution of P3D (``*_branch2b_t``: kernel 3×1×1, pad 1×0×0, no bias).

    ``stride`` subsamples space; only a strided P3D-B unit of the ``"pytorch"`` style needs it (see :class:`P3DB`).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, (3, 1, 1), (1, stride, stride), (1, 0, 0), bias=False)
        channels_last_weight(self)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv3d_views(self, x, weight, bias)


class Bottleneck(nn.Module):
    """A ResNet bottleneck: 1×1×1 reduce, the block's :meth:`residual`, 1×1×1 expand, shortcut sum, ReLU.

    Parameter names follow torchvision's ``Bottleneck`` (``conv1``/``bn1``, ``conv2``/``bn2``, ``conv3``/``bn3``,
    ``downsample``) so 2D ImageNet weights map one-to-one; P3D adds ``conv_t``/``bn_t``.

    ``style="caffe"`` puts the spatial stride on ``conv1`` (``res3a_branch2a`` has stride 1×2×2), ``"pytorch"``
    on the 3×3 (S), as torchvision/timm ResNets.
    """

    expansion: ClassVar[int] = 4
    kind: ClassVar[str] = ""

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
        reduce_stride, s_stride = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = PointwiseConv(inplanes, planes, reduce_stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = SpatialConv(planes, planes, s_stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.build_temporal(planes, s_stride)
        self.conv3 = PointwiseConv(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.downsample = downsample

    # the block's own rules -------------------------------------------------------------------------------------
    @property
    def temporal(self) -> bool:
        """Whether this block has a temporal conv (every P3D block; not the 2D one)."""
        return hasattr(self, "conv_t")

    def build_temporal(self, planes: int, s_stride: int) -> None:
        """T after S: it reads S's output, already strided, so T itself never strides."""
        self.conv_t = TemporalConv(planes, planes)
        self.bn_t = nn.BatchNorm3d(planes)

    @torch.no_grad()
    def init_temporal(self, mode: str, std: float = 0.001, generator: torch.Generator | None = None) -> None:
        """``"identity"``: T passes its input through (a Dirac kernel at the centre tap, identity BN), so the
        residual function equals the 2D one; ``"paper"``: Gaussian ``std`` (the deploy files' weight_filler)."""
        nn.init.ones_(self.bn_t.weight)
        nn.init.zeros_(self.bn_t.bias)
        self.bn_t.running_mean.zero_()
        if mode == "identity":
            self.bn_t.running_var.fill_(1.0 - self.bn_t.eps)
            w = self.conv_t.weight
            w.zero_()
            c = w.shape[0]
            w[torch.arange(c), torch.arange(c), 1, 0, 0] = 1.0
        else:
            self.bn_t.running_var.fill_(1.0)
            tmp = torch.empty(self.conv_t.weight.shape)  # logical order: same values whatever the layout
            self.conv_t.weight.copy_(tmp.normal_(0.0, std, generator=generator))

    # the paths ---------------------------------------------------------------------------------------------------
    def S(self, x: Tensor) -> Tensor:  # noqa: N802 - the paper's name
        """relu(bn2(S(x))): the spatial path, rectified in every block type (``*_branch2b_relu``)."""
        return relu(conv_bn(self.conv2, self.bn2, x))

    def T(self, x: Tensor) -> Tensor:  # noqa: N802 - the paper's name
        """bn_t(T(x)), not rectified: A adds its ReLU, B and C rectify after the sum."""
        return conv_bn(self.conv_t, self.bn_t, x)

    def residual(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else conv_bn(self.downsample[0], self.downsample[1], x)
        out = relu(conv_bn(self.conv1, self.bn1, x))
        out = conv_bn(self.conv3, self.bn3, self.residual(out))
        return relu(add(out, identity))


class P3DA(Bottleneck):
    """P3D-A, cascaded: x + T(S(x)) (paper Eq. 3).

    ``res2a_branch2b`` → ReLU → ``res2a_branch2b_t`` → ``bn2a_branch2b_t`` → ``res2a_branch2b_t_relu``.
    """

    kind = "A"

    def residual(self, x: Tensor) -> Tensor:
        return relu(self.T(self.S(x)))


class P3DB(Bottleneck):
    """P3D-B, parallel: x + S(x) + T(x) (paper Eq. 4).

    S and T both read ``bn2b_branch2a``; ``res2b_branch2b_st`` = relu(S) + T (coefficients 1, 1), then ReLU.
    """

    kind = "B"

    def build_temporal(self, planes: int, s_stride: int) -> None:
        """T reads the block input in parallel with S, so it subsamples space as S does."""
        self.conv_t = TemporalConv(planes, planes, s_stride)
        self.bn_t = nn.BatchNorm3d(planes)

    @torch.no_grad()
    def init_temporal(self, mode: str, std: float = 0.001, generator: torch.Generator | None = None) -> None:
        """As :meth:`Bottleneck.init_temporal`, except that the identity of a parallel T is zero:
        relu(relu(S) + 0) = relu(S)."""
        super().init_temporal(mode, std, generator)
        if mode == "identity":
            self.conv_t.weight.zero_()

    def residual(self, x: Tensor) -> Tensor:
        s, t = self.S(x), self.T(x)
        return relu(add(t, s))


class P3DC(Bottleneck):
    """P3D-C, cascaded with a direct path: x + S(x) + T(S(x)) (paper Eq. 5).

    T reads the rectified S; ``res2c_branch2b_st`` averages the two paths (Eltwise coefficients 0.5, 0.5), then
    ReLU.  The port sums them instead, which doubles the scale the following layers see.
    """

    kind = "C"

    def residual(self, x: Tensor) -> Tensor:
        s = self.S(x)
        return relu(add(self.T(s), s, alpha=0.5, beta=0.5))


class Bottleneck2D(Bottleneck):
    """A plain 2D ResNet bottleneck applied to every frame: res5 of P3D (``res5a_branch2b`` is 3×3, after the
    ``res5a_reshape`` to 4D), and every unit of the frame-level 2D baselines."""

    kind = "S"

    def build_temporal(self, planes: int, s_stride: int) -> None:
        """No temporal conv."""

    def residual(self, x: Tensor) -> Tensor:
        return self.S(x)


BLOCKS: dict[str, type[Bottleneck]] = {"A": P3DA, "B": P3DB, "C": P3DC, "S": Bottleneck2D}
