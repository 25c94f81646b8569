"""The "port formulation" of P3D: the same network written the way the widely used PyTorch port writes it.

qijiezhao/pseudo-3d-pytorch (``p3d_model.py``) builds S and T as plain ``nn.Conv3d`` (1×3×3 and 3×1×1) with
``nn.BatchNorm3d`` on contiguous NCDHW tensors, pools with ``nn.MaxPool3d`` and runs res5 as ``nn.Conv2d`` /
``nn.BatchNorm2d`` after a ``view`` to 4D.  This module rebuilds P3D-63/131/199 in that formulation, but with the
*authors'* block semantics (ReLU placement, the 0.5 average in P3D-C, Caffe pool1), so it computes exactly the
function of :class:`p3d.models.P3DResNet` and loads its state dict unchanged: the benchmark compares two
formulations of one function, and checks that they agree before timing them.

Only for benchmarks; not part of the library.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from p3d.models import P3DResNet


class PortUnit(nn.Module):
    """One bottleneck in the port's style: ``nn.Conv3d``/``nn.BatchNorm3d`` (or 2D in res5) on NCDHW tensors."""

    def __init__(self, inplanes: int, planes: int, stride: int, kind: str, downsample: bool) -> None:
        super().__init__()
        two_d = kind == "S"
        conv = nn.Conv2d if two_d else nn.Conv3d
        bn = nn.BatchNorm2d if two_d else nn.BatchNorm3d
        k1, k3, st = (1, 3, (stride, stride)) if two_d else ((1, 1, 1), (1, 3, 3), (1, stride, stride))
        pad = 1 if two_d else (0, 1, 1)
        self.kind = kind
        self.conv1 = conv(inplanes, planes, k1, stride=st, bias=False)  # caffe style: stride on branch2a
        self.bn1 = bn(planes)
        self.conv2 = conv(planes, planes, k3, padding=pad, bias=False)
        self.bn2 = bn(planes)
        if not two_d:
            self.conv_t = nn.Conv3d(planes, planes, (3, 1, 1), padding=(1, 0, 0), bias=False)
            self.bn_t = nn.BatchNorm3d(planes)
        self.conv3 = conv(planes, planes * 4, k1, bias=False)
        self.bn3 = bn(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(conv(inplanes, planes * 4, k1, stride=st, bias=False), bn(planes * 4)) if downsample else None
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        s = self.relu(self.bn2(self.conv2(out)))
        if self.kind == "A":
            out = self.relu(self.bn_t(self.conv_t(s)))
        elif self.kind == "B":
            out = self.relu(s + self.bn_t(self.conv_t(out)))
        elif self.kind == "C":
            out = self.relu((s + self.bn_t(self.conv_t(s))) * 0.5)
        else:
            out = s
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class PortP3D(nn.Module):
    """P3D ResNet (``style="caffe"``, 16-frame clips) in the port's NCDHW ``nn.Conv3d`` formulation."""

    def __init__(self, layers=(3, 4, 6, 3), pattern: str = "ABC", num_classes: int = 400, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((2, 3, 3), stride=2, padding=0, ceil_mode=True)  # Caffe pool1
        self.maxpool_2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1))  # 3a_pool, 4a_pool, res5a_pool
        inplanes, unit = width, 0
        for i, (n, planes) in enumerate(zip(layers, (width, width * 2, width * 4, width * 8), strict=True), start=1):
            units = []
            for j in range(n):
                kind = "S" if i == 4 else pattern[unit % len(pattern)]
                unit += i != 4
                stride = 2 if (j == 0 and i > 1) else 1
                units.append(PortUnit(inplanes, planes, stride, kind, downsample=j == 0))
                inplanes = planes * 4
            setattr(self, f"layer{i}", nn.Sequential(*units))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(inplanes, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``pool5``: ``(N, 3, 16, H, W)`` → ``(N, 8·4·width)``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(self.maxpool_2(x))
        x = self.layer3(self.maxpool_2(x))
        x = self.maxpool_2(x)
        x = x.view(-1, x.size(1), x.size(3), x.size(4))  # T = 1 left: res5 is 2D (the port's view)
        x = self.layer4(x)
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(x)))


def port_from(model: P3DResNet) -> PortP3D:
    """A :class:`PortP3D` with ``model``'s weights (res5's 1×3×3 / 1×1×1 kernels lose their unit time axis)."""
    if model.style != "caffe" or not model.temporal_pool or model.in_channels != 3:
        raise ValueError("the port formulation is built for style='caffe', temporal_pool=True, RGB models")
    port = PortP3D(model.layers_cfg, model.pattern, model.num_classes, model.conv1.out_channels)
    ref = port.state_dict()
    sd = {}
    for k, v in model.state_dict().items():
        sd[k] = v.reshape(ref[k].shape).contiguous() if v.dim() != ref[k].dim() else v.contiguous()
    port.load_state_dict(sd, strict=True)
    return port.train(model.training)


@torch.no_grad()
def check_equal(model: P3DResNet, port: PortP3D, x: Tensor, atol: float = 1e-4) -> float:
    """Assert that both formulations compute the same ``pool5`` features and logits on ``x`` (eval mode);
    returns the largest error relative to the features' scale."""
    model.eval(), port.eval()
    fa = model.forward_layers(x, ["pool5"])["pool5"]
    fb = port.features(x)
    rel = ((fa - fb).abs().max() / fa.abs().max()).item()
    assert rel < atol, f"port formulation differs from the model: max relative error {rel:.2e}"
    assert torch.allclose(model(x), port(x), rtol=1e-3, atol=1e-5), "port formulation logits differ"
    return rel
