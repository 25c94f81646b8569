"""Independent reference computations for the model tests, written straight from the deploy prototxts.

Nothing here imports p3d's blocks: plain NCDHW ``F.conv3d`` / ``F.conv2d`` on the weights, Caffe's BN formula,
and a torchvision-layout 2D ResNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bn(x: Tensor, sd: dict[str, Tensor], prefix: str, eps: float = 1e-5) -> Tensor:
    """Caffe ``BN`` layer in test mode: (x - mean) / sqrt(var + eps) * scale + shift, per channel (dim 1)."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = sd[prefix + ".running_mean"].view(shape), sd[prefix + ".running_var"].view(shape)
    w, b = sd[prefix + ".weight"].view(shape), sd[prefix + ".bias"].view(shape)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def conv(x: Tensor, w: Tensor, stride=(1, 1, 1), pad=(0, 0, 0)) -> Tensor:
    return F.conv3d(x, w, None, stride, pad)


def p3d_unit(x: Tensor, sd: dict[str, Tensor], p: str, kind: str, stride: int, style: str) -> Tensor:
    """One residual unit as the prototxt writes it (res2a..res4b35); ``p`` is the state-dict prefix."""
    s1, s2 = ((1, stride, stride), (1, 1, 1)) if style == "caffe" else ((1, 1, 1), (1, stride, stride))
    a = F.relu(bn(conv(x, sd[p + "conv1.weight"], s1), sd, p + "bn1"))  # branch2a + relu
    if kind == "S":
        mid = F.relu(bn(conv(a, sd[p + "conv2.weight"], s2, (0, 1, 1)), sd, p + "bn2"))
    else:
        s = F.relu(bn(conv(a, sd[p + "conv2.weight"], s2, (0, 1, 1)), sd, p + "bn2"))  # branch2b + relu
        if kind == "A":
            mid = F.relu(bn(conv(s, sd[p + "conv_t.weight"], (1, 1, 1), (1, 0, 0)), sd, p + "bn_t"))
        elif kind == "B":
            t = bn(conv(a, sd[p + "conv_t.weight"], s2, (1, 0, 0)), sd, p + "bn_t")
            mid = F.relu(s + t)  # Eltwise coeff 1, 1 then branch2b_st_relu
        else:
            t = bn(conv(s, sd[p + "conv_t.weight"], (1, 1, 1), (1, 0, 0)), sd, p + "bn_t")
            mid = F.relu(0.5 * s + 0.5 * t)  # Eltwise coeff 0.5, 0.5 then relu
    out = bn(conv(mid, sd[p + "conv3.weight"]), sd, p + "bn3")
    if p + "downsample.0.weight" in sd:
        short = bn(conv(x, sd[p + "downsample.0.weight"], (1, stride, stride)), sd, p + "downsample.1")
    else:
        short = x
    return F.relu(out + short)


def randomize(model: nn.Module, seed: int = 0) -> None:
    """Random weights and BN statistics everywhere, so no block is accidentally an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 1:  # BN scale
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (1.0 / fan_in) ** 0.5)


class ResNet2D(nn.Module):
    """A 2D ResNet in torchvision's key layout (conv1, bn1, layerN.M.conv1..3/bn1..3, downsample.0/1, fc).

    ``style="pytorch"`` is torchvision's (stride on the 3×3, pool1 3×3/2 pad 1); ``"caffe"`` is the original
    Caffe ResNet (stride on the first 1×1, pool1 3×3/2 unpadded with ceil rounding).
    """

    def __init__(self, layers=(3, 4, 6, 3), width=64, num_classes=1000, style="pytorch", in_channels=3):
        super().__init__()
        self.style = style
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blk = nn.Module()
                s1, s2 = (stride, 1) if style == "caffe" else (1, stride)
                blk.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False)
                blk.bn1 = nn.BatchNorm2d(planes)
                blk.conv2 = nn.Conv2d(planes, planes, 3, s2, 1, bias=False)
                blk.bn2 = nn.BatchNorm2d(planes)
                blk.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
                blk.bn3 = nn.BatchNorm2d(planes * 4)
                if j == 0:
                    blk.downsample = nn.Sequential(
                        nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
                    )
                else:
                    blk.downsample = None
                blocks.append(blk)
                inplanes = planes * 4
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(inplanes, num_classes)

    def pool5(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True) if self.style == "caffe" else F.max_pool2d(x, 3, 2, 1)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for b in layer:
                out = F.relu(b.bn1(b.conv1(x)))
                out = F.relu(b.bn2(b.conv2(out)))
                out = b.bn3(b.conv3(out))
                x = F.relu(out + (x if b.downsample is None else b.downsample(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool5(x))
