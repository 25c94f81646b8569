"""C3D (Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks", ICCV 2015).

The 3D ConvNet baseline of the P3D paper's tables: eight 3×3×3 convolutions (pad 1), five max-pools
(``pool1`` 1×2×2, ``pool2``..``pool5`` 2×2×2; ``pool5`` pads space by 1 as the released model does), ``fc6``
and ``fc7`` (4096, ReLU, dropout 0.5) and the classifier ``fc8``.  Input ``(N, 3, 16, 112, 112)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch.nn.functional as F
from torch import Tensor, nn

from p3d.models.config import ConfiguredModel, PretrainedCfg
from p3d.spec import InputSpec

__all__ = ["C3D"]

# (name, output channels) of the 8 conv layers, grouped by the pool that follows each group.
_GROUPS = (("conv1a",), ("conv2a",), ("conv3a", "conv3b"), ("conv4a", "conv4b"), ("conv5a", "conv5b"))
_CHANNELS = {
    "conv1a": 1,
    "conv2a": 2,
    "conv3a": 4,
    "conv3b": 4,
    "conv4a": 8,
    "conv4b": 8,
    "conv5a": 8,
    "conv5b": 8,
}
LAYER_NAMES = ("pool5", "fc6", "fc7", "logits", "prob")


class C3D(ConfiguredModel, nn.Module):
    """C3D.  ``width`` is conv1a's channel count (64 in the paper); fc6/fc7 have ``fc_width`` units (4096).

    After ``pool5`` the map is adaptively averaged to 1×4×4 — the identity at the paper's 16×112×112 input,
    which makes other clip lengths and sizes usable with the same fc6.
    """

    def __init__(
        self,
        num_classes: int = 487,
        in_channels: int = 3,
        width: int = 64,
        fc_width: int = 4096,
        dropout: float = 0.5,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or width < 1 or fc_width < 1:
            raise ValueError(f"bad num_classes={num_classes}, width={width} or fc_width={fc_width}")
        self.in_channels = in_channels
        spec = input_spec or InputSpec(clip_len=16, size=(112, 112), resize=(128, 171))
        if spec.channels != in_channels:
            raise ValueError(f"input_spec has {spec.channels} channels but in_channels={in_channels}")
        options = {"num_classes": num_classes, "in_channels": in_channels, "width": width, "fc_width": fc_width}
        self.pretrained_cfg = PretrainedCfg(
            "C3D", {**options, "dropout": dropout}, spec, classifier="fc8", first_conv="conv1a"
        )
        c = in_channels
        for name, mult in _CHANNELS.items():
            setattr(self, name, nn.Conv3d(c, width * mult, 3, padding=1))
            c = width * mult
        self.num_features = c * 16
        self.fc6 = nn.Linear(self.num_features, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)

    @property
    def feature_layers(self) -> tuple[str, ...]:
        return LAYER_NAMES

    def check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected a clip batch (N, {self.in_channels}, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] < 16 or min(x.shape[3:]) < 32:
            raise ValueError(f"C3D needs at least 16 frames of 32×32 (4 temporal halvings), got {tuple(x.shape)}")

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` → pool5 map ``(N, 8·width, 1, 4, 4)``."""
        self.check_input(x)
        for i, group in enumerate(_GROUPS):
            for name in group:
                x = self.relu(getattr(self, name)(x))
            if i == 0:
                x = F.max_pool3d(x, (1, 2, 2), (1, 2, 2))
            elif i < 4:
                x = F.max_pool3d(x, 2, 2)
            else:
                x = F.max_pool3d(x, 2, 2, padding=(0, 1, 1))
        return F.adaptive_avg_pool3d(x, (1, 4, 4))

    def _fc(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fc6 = self.relu(self.fc6(x.flatten(1)))
        fc7 = self.relu(self.fc7(self.drop(fc6)))
        return fc6, fc7

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        fc7 = self._fc(x)[1]
        return fc7 if pre_logits else self.fc8(self.drop(fc7))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_layers(self, x: Tensor, names: Iterable[str] = ("fc6",)) -> dict[str, Tensor]:
        """``pool5`` ``(N, 8·width, 1, 4, 4)``; ``fc6``, ``fc7`` ``(N, fc_width)``; ``logits``/``prob``."""
        names = list(names)
        for n in names:
            if n not in LAYER_NAMES:
                raise ValueError(f"unknown layer {n!r}; expected one of {list(LAYER_NAMES)}")
        out = {"pool5": self.forward_features(x)}
        out["fc6"], out["fc7"] = self._fc(out["pool5"])
        out["logits"] = self.fc8(self.drop(out["fc7"]))
        out["prob"] = out["logits"].softmax(1)
        return {n: out[n] for n in names}

    def get_classifier(self) -> nn.Module:
        return self.fc8

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc8`` with a fresh ``num_classes``-way classifier."""
        if num_classes < 1:
            raise ValueError(f"C3D needs num_classes >= 1, got {num_classes}")
        self.fc8 = nn.Linear(self.fc8.in_features, num_classes)
        nn.init.normal_(self.fc8.weight, std=0.01)
        nn.init.zeros_(self.fc8.bias)
        self.pretrained_cfg = self.pretrained_cfg.replace(option_changes={"num_classes": num_classes}, class_names=None)
