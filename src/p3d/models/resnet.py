"""The P3D ResNet trunk (paper Sec. 3.3) and the frame-level 2D ResNet built from the same parts.

Topology from ``deploy_p3d_resnet_*.prototxt``:

* ``conv1`` 1×7×7 stride 1×2×2 pad 0×3×3, ``bn_conv1``, ReLU;
  ``pool1`` max 2×3×3 stride 2×2×2 — unpadded with ceil rounding in the ``"caffe"`` style (Caffe pooling),
  padded by 1 in space with floor rounding in the ``"pytorch"`` style (torchvision/timm);
* res2 (``layer1``), then ``3a_pool`` (max over time, kernel 2 stride 2), res3 (``layer2``), ``4a_pool``,
  res4 (``layer3``): every unit a P3D block, the type cycling over one global unit counter
  (``pattern="ABC"``: res2a=A, res2b=B, res2c=C, res3a=A, …, 47 units in P3D-199);
* ``res5a_pool`` brings time to 1 at 16 frames, ``res5a_reshape`` drops it, and res5 (``layer4``) is a 2D
  ResNet stage; ``pool5`` global average, ``pool5_drop`` dropout, ``fc_*`` classifier, ``prob`` softmax.

Any clip length whose temporal max-pools each see an even number of frames or a single frame is accepted
(1, 2, 4, 8, 16, 32, 48, …): with 8 frames the last pooling sees one frame and, as Caffe's ceil rounding does,
passes it through; with 32 frames res5 runs on each of the 2 remaining frames and ``pool5`` averages over them —
the output is always one row per clip.  Any spatial size ≥ 32 works: ``pool5`` is global.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from p3d.models.blocks import BLOCKS, Bottleneck, PointwiseConv, SpatialConv
from p3d.models.config import ConfiguredModel, PretrainedCfg
from p3d.models.layers import channels_last_grad, conv_bn, frames, relu, temporal_max_pool, unframes
from p3d.spec import InputSpec, flow_unit, imagenet_rgb

__all__ = ["P3DResNet", "STAGE_DEPTHS", "block_kinds", "res4_caffe_name", "unit_name"]

# ResNet-50/101/152 stage depths (He et al. 2016, Table 1) -> P3D-63/131/199.
STAGE_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}

LAYER_NAMES = ("pool1", "res2", "res3", "res4", "res5", "pool5", "logits", "prob")


def unit_name(stage: int, index: int, depth: int) -> str:
    """Caffe ResNet name of unit ``index`` of a ``depth``-unit stage: letters up to 6 units (``res4a`` … ``res4f``),
    else ``a`` then ``b1`` … (``res4b35`` is the last of P3D-199's 36 res4 units)."""
    if depth <= 6 or index == 0:
        return f"res{stage}{'abcdef'[index]}"
    return f"res{stage}b{index}"


def res4_caffe_name(depth: int) -> str:
    """Name of the last res4 unit: ``res4f`` (6 units), ``res4b35`` (36 units)."""
    return unit_name(4, depth - 1, depth)


def block_kinds(layers: Sequence[int], pattern: str) -> list[str]:
    """The block type of every unit, stage by stage: the pattern cycles over one global counter of the units of
    res2..res4 (``"ABC"``: res2a=A, res2b=B, res2c=C, res3a=A, …); res5 is 2D (``"S"``)."""
    n = sum(layers[:3])
    kinds = [pattern[i % len(pattern)] for i in range(n)] + ["S"] * layers[3]
    bounds = [0, *itertools.accumulate(layers)]
    return [kinds[a:b] for a, b in itertools.pairwise(bounds)]


class P3DResNet(ConfiguredModel, nn.Module):
    """Pseudo-3D ResNet.  Input ``(N, C, T, H, W)``, output logits ``(N, num_classes)``.

    Args:
        layers: units per stage res2..res5; ``(3, 4, 6, 3)``, ``(3, 4, 23, 3)``, ``(3, 8, 36, 3)`` give P3D-63,
            P3D-131 and P3D-199.
        pattern: block types cycled over the global index of the units of res2..res4: ``"ABC"`` (the paper's
            P3D ResNet), ``"A"``, ``"B"``, ``"C"`` (Table 1's single-type variants) or ``"S"`` (no temporal
            conv: a 2D ResNet on the same frame schedule).  res5 is always 2D.
        num_classes: classifier outputs (487 Sports-1M, 400 Kinetics, 101 UCF101); 0 leaves no classifier.
        in_channels: 3 for RGB, 2 for optical flow (x, y).
        width: channels of ``conv1``; the stages have 1×, 2×, 4×, 8× this many bottleneck channels (64 is the
            paper's network, a small value gives a tiny model for tests and demos).
        dropout: ``pool5_drop`` ratio (0.1 Sports-1M, 0.5 Kinetics deploy files; 0.9 for UCF101 fine-tuning).
        style: ``"caffe"`` (stride on the first 1×1, pool1 unpadded with ceil rounding, as the official files) or
            ``"pytorch"`` (stride on the 3×3, pool1 padded, as torchvision/timm ResNets).
        temporal_pool: max-pool time by 2 at pool1 and before res3, res4 and res5 (P3D).  ``False`` keeps every
            frame to the end — with ``pattern="S"`` that is the frame-level 2D ResNet baseline, whose clip score
            (the classifier on pool5 averaged over frames) equals the average of its per-frame scores.
        input_spec: the preprocessing this model expects; defaults to ImageNet RGB, 16×160×160.
    """

    def __init__(
        self,
        layers: Sequence[int] = STAGE_DEPTHS[152],
        pattern: str = "ABC",
        num_classes: int = 400,
        in_channels: int = 3,
        width: int = 64,
        dropout: float = 0.5,
        style: str = "caffe",
        temporal_pool: bool = True,
        input_spec: InputSpec | None = None,
    ) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive stage depths (res2..res5), got {layers}")
        if not pattern or any(k not in BLOCKS for k in pattern):
            raise ValueError(f"pattern must be a non-empty string over {sorted(BLOCKS)}, got {pattern!r}")
        if style not in ("caffe", "pytorch"):
            raise ValueError(f"style must be 'caffe' or 'pytorch', got {style!r}")
        if in_channels < 1 or width < 1 or num_classes < 0:
            raise ValueError(f"bad in_channels={in_channels}, width={width} or num_classes={num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.layers_cfg = layers
        self.pattern = pattern
        self.style = style
        self.in_channels = in_channels
        self.temporal_pool = temporal_pool
        if input_spec is None:
            input_spec = imagenet_rgb() if in_channels == 3 else flow_unit(in_channels)
        if input_spec.channels != in_channels:
            raise ValueError(f"input_spec has {input_spec.channels} channels but in_channels={in_channels}")
        options = {
            "layers": list(layers),
            "pattern": pattern,
            "num_classes": num_classes,
            "in_channels": in_channels,
            "width": width,
            "dropout": dropout,
            "style": style,
            "temporal_pool": temporal_pool,
        }
        self.pretrained_cfg = PretrainedCfg("P3DResNet", options, input_spec)

        self.conv1 = SpatialConv(in_channels, width, stride=2, kernel_size=7)
        self.bn1 = nn.BatchNorm3d(width)

        kinds = block_kinds(layers, pattern)
        self.inplanes = width
        self.layer1 = self._make_stage(width, kinds[0], 1)
        self.layer2 = self._make_stage(width * 2, kinds[1], 2)
        self.layer3 = self._make_stage(width * 4, kinds[2], 2)
        self.layer4 = self._make_stage(width * 8, kinds[3], 2)
        self.num_features = width * 8 * Bottleneck.expansion
        self.res4_name = res4_caffe_name(layers[2])
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.reset_parameters()

    # construction ------------------------------------------------------------------------------------------
    def _make_stage(self, planes: int, kinds: Sequence[str], stride: int) -> nn.Sequential:
        units = []
        for i, kind in enumerate(kinds):
            block = BLOCKS[kind]
            s = stride if i == 0 else 1
            downsample = None
            if i == 0 and (s != 1 or self.inplanes != planes * block.expansion):
                downsample = nn.Sequential(
                    PointwiseConv(self.inplanes, planes * block.expansion, s),
                    nn.BatchNorm3d(planes * block.expansion),
                )
            units.append(block(self.inplanes, planes, s, downsample, self.style))
            self.inplanes = planes * block.expansion
        return nn.Sequential(*units)

    def reset_parameters(self, temporal_init: str = "kaiming") -> None:
        """He initialisation for convs, BN to identity, a small classifier; temporal convs as ``temporal_init``
        (see :func:`init_temporal`)."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                _fill(m.weight, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        if temporal_init != "kaiming":
            init_temporal(self, temporal_init)

    # introspection -----------------------------------------------------------------------------------------
    def units(self) -> Iterable[tuple[str, Bottleneck]]:
        """``(caffe_name, module)`` of every residual unit: ``res2a``, ``res2b``, …, ``res4b35``, ``res5c``."""
        for stage, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=2):
            for i, unit in enumerate(layer):
                yield unit_name(stage, i, len(layer)), unit

    @property
    def feature_layers(self) -> tuple[str, ...]:
        """Names :meth:`forward_layers` accepts (aliases ``res5c``, ``res4_last`` and e.g. ``res4b35`` too)."""
        return LAYER_NAMES

    def _resolve(self, name: str) -> str:
        aliases = {"res5c": "res5", "res4_last": "res4", self.res4_name: "res4", "fc": "logits"}
        key = aliases.get(name, name)
        if key not in LAYER_NAMES:
            raise ValueError(
                f"unknown layer {name!r}; expected one of {list(LAYER_NAMES)} or aliases {sorted(aliases)}"
            )
        if key in ("logits", "prob") and self.num_classes == 0:
            raise ValueError(f"layer {name!r}: the model has no classifier (num_classes=0); take pool5 or res5c")
        return key

    # forward -----------------------------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Validate ``x``: ``(N, C, T, H, W)`` float, ``C = in_channels``, a supported clip length, H, W ≥ 32."""
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor of shape (N, C, T, H, W), got {type(x).__name__}")
        if x.dim() != 5:
            raise ValueError(
                f"expected a 5D clip batch (N, C, T, H, W) with C={self.in_channels}, got shape {tuple(x.shape)}"
                + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 4 else "")
            )
        n, c, t, h, w = x.shape
        if c != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels (dim 1 of (N, C, T, H, W)), got {c} in shape "
                f"{tuple(x.shape)}"
                + (" — channels-last clips must be permuted" if x.shape[-1] == self.in_channels else "")
            )
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point clip, got {x.dtype}; normalise uint8 frames first")
        if h < 32 or w < 32:
            raise ValueError(f"spatial size must be at least 32×32, got {h}×{w}")
        if self.temporal_pool and not clip_len_ok(t):
            raise ValueError(
                f"unsupported clip length T={t}: each of the 4 temporal max-pools (kernel 2, stride 2) must see an "
                f"even number of frames or a single one — use e.g. 8, 16 (the paper's) or 32 frames"
            )

    def _stem(self, x: Tensor) -> Tensor:
        x = relu(conv_bn(self.conv1, self.bn1, x))
        # pool1: (P3D) kernel-2 stride-2 max over time and 3×3 stride-2 max over space.  Max is separable, so
        # time goes first: the spatial pooling, the dearer of the two, then sees half the frames.
        if self.temporal_pool:
            x = temporal_max_pool(x)
        if self.style == "caffe":
            f = F.max_pool2d(frames(x), 3, 2, 0, ceil_mode=True)
        else:
            f = F.max_pool2d(frames(x), 3, 2, 1)
        return unframes(f, x.shape[0])

    def _pool_time(self, x: Tensor) -> Tensor:
        return temporal_max_pool(x) if self.temporal_pool else x

    def _trunk(self, x: Tensor, wanted: set[str] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Run conv1..res5; returns res5's output and the requested intermediate outputs."""
        self.check_input(x)
        x = x.contiguous(memory_format=torch.channels_last_3d)  # NDHWC: see blocks.py
        out: dict[str, Tensor] = {}
        x = self._stem(x)
        if wanted and "pool1" in wanted:
            out["pool1"] = x
        x = self.layer1(x)
        if wanted and "res2" in wanted:
            out["res2"] = x
        x = self.layer2(self._pool_time(x))  # 3a_pool
        if wanted and "res3" in wanted:
            out["res3"] = x
        x = self.layer3(self._pool_time(x))  # 4a_pool
        if wanted and "res4" in wanted:
            out["res4"] = x
        x = self.layer4(self._pool_time(x))  # res5a_pool; res5 is 2D on each remaining frame
        return x, out

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` → res5c output ``(N, 8·4·width, T', H/32, W/32)`` (T' = 1 at 16 frames)."""
        return self._trunk(x)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """res5c map → ``pool5`` ``(N, num_features)`` (``pre_logits=True``) or logits ``(N, num_classes)``."""
        x = channels_last_grad(x).mean(dim=(2, 3, 4))
        if pre_logits:
            return x
        return self.fc(self.drop(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_layers(self, x: Tensor, names: Iterable[str] = ("pool5",)) -> dict[str, Tensor]:
        """Named intermediate outputs, keyed by the names asked for.

        ``pool1``/``res2``/``res3``/``res4`` (alias ``res4_last`` or the Caffe name, e.g. ``res4b35``)/``res5``
        (alias ``res5c``) are maps ``(N, C, T, H, W)``; ``pool5`` is ``(N, num_features)``; ``logits``
        (alias ``fc``) and ``prob`` (softmax) are ``(N, num_classes)``.
        """
        names = list(names)
        keys = {n: self._resolve(n) for n in names}
        wanted = set(keys.values())
        res5, out = self._trunk(x, wanted)
        out["res5"] = res5
        if wanted & {"pool5", "logits", "prob"}:
            out["pool5"] = self.forward_head(res5, pre_logits=True)
            if wanted & {"logits", "prob"}:
                out["logits"] = self.fc(self.drop(out["pool5"]))
                out["prob"] = out["logits"].softmax(dim=1)
        return {n: out[k] for n, k in keys.items()}

    # classifier --------------------------------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace ``fc`` with a fresh ``num_classes``-way classifier (0 for none)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        self.pretrained_cfg = self.pretrained_cfg.replace(option_changes={"num_classes": num_classes}, class_names=None)
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes)
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)
        else:
            self.fc = nn.Identity()

    # BatchNorm freezing (paper Sec. 4.1: "BatchNorm frozen except the first") --------------------------------
    def freeze_bn(self, keep_first: bool = True) -> None:
        """Freeze every BatchNorm — running statistics used in training too, affine parameters fixed — except
        ``bn1`` (``bn_conv1``, the only ``frozen: false`` BN of the deploy files) when ``keep_first``."""
        self._frozen_bn = [
            m for n, m in self.named_modules() if isinstance(m, nn.BatchNorm3d) and not (keep_first and n == "bn1")
        ]
        for m in self._frozen_bn:
            for p in m.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> P3DResNet:
        super().train(mode)
        for m in getattr(self, "_frozen_bn", ()):
            m.eval()
        return self


def clip_len_ok(t: int) -> bool:
    """Whether 4 kernel-2 stride-2 temporal max-pools each see an even number of frames or a single one."""
    if t < 1:
        return False
    for _ in range(4):
        if t > 1 and t % 2:
            return False
        t = max(1, t // 2)
    return True


def init_temporal(model: nn.Module, mode: str = "identity", std: float = 0.001, generator=None) -> None:
    """Initialise the temporal convs ``conv_t``/``bn_t`` of every P3D unit (each block knows its own rule,
    :meth:`~p3d.models.blocks.Bottleneck.init_temporal`).

    ``"identity"``: the fresh network computes exactly its 2D counterpart on a static clip (indeed on any clip:
    each unit's residual function becomes the 2D one).  In A and C, T passes its input through (a Dirac kernel
    at the centre tap and an identity BN: γ=1, β=0, μ=0, σ²=1−ε), so A gives relu(relu(S)) = relu(S) and C gives
    relu(½S + ½S) = relu(S); in B, T starts at zero so relu(relu(S) + 0) = relu(S).  Gradients still flow to T.

    ``"paper"``: the paper's choice for new layers (Sec. 3.3: temporal convs are randomly initialised), a
    Gaussian with ``std`` (the deploy files' ``weight_filler``: gaussian, std 0.001) and a unit BN.
    """
    if mode not in ("identity", "paper"):
        raise ValueError(f"temporal_init must be 'identity' or 'paper', got {mode!r}")
    for m in model.modules():
        if isinstance(m, Bottleneck) and m.temporal:
            m.init_temporal(mode, std, generator)


@torch.no_grad()
def _fill(weight: Tensor, init) -> None:
    """Apply a random ``init`` in logical (contiguous) order, then copy into ``weight``'s own layout: the same
    seed gives the same values whether the kernel is stored contiguous or channels-last (see blocks.py)."""
    tmp = torch.empty(weight.shape, dtype=weight.dtype, device=weight.device)
    init(tmp)
    weight.copy_(tmp)


def count_layers(model: nn.Module) -> int:
    """Weighted layers along the main path, as the paper counts them (shortcut projections excluded):
    ResNet-152 has 152, and each of the 47 P3D units of res2..res4 adds its temporal conv, giving P3D-199."""
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Linear)) and ".downsample." not in f".{name}.":
            n += 1
    return n
