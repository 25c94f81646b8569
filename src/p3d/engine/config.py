"""Training configuration: dataclasses with the paper's protocol as defaults, YAML files, dotted overrides.

Defaults follow the paper (Sec. 4.1): SGD with momentum 0.9, learning rate 0.001 divided by 10 every 60K
iterations, 150K iterations, 128 clips per iteration (here ``batch_size × accum_steps × world size``),
16×160×160 clips from frames resized to 182×242, every BatchNorm frozen except the first.  The paper does not
state a weight decay; 1e-4 is ResNet's (He et al. 2016).  Dropout is the model's (0.5) unless set — 0.9 is the
paper's choice for fine-tuning on UCF101.  These settings are for fine-tuning pretrained networks;
:data:`DEMO_OVERRIDES` (used by ``p3d demo``) trains tiny networks from scratch instead.

A run's configuration is resolved in this order: defaults, then a YAML file (same nesting as the dataclasses),
then ``--set section.key=value`` overrides (values parsed as YAML: ``--set optim.lr=0.01``,
``--set model.layers=[1,1,1,1]``).  The resolved configuration is written to ``<run dir>/config.yaml``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ModelConfig",
    "DataConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "DEMO_OVERRIDES",
    "load_config",
    "apply_overrides",
    "save_config",
]


@dataclass
class ModelConfig:
    name: str = "p3d199"
    pattern: str | None = None  # "ABC" (registry default), "A", "B", "C"
    width: int | None = None  # registry default 64
    layers: list[int] | None = None  # registry default per depth
    dropout: float | None = None  # model default 0.5; 0.9 for UCF101 fine-tuning (paper)
    style: str | None = None  # "caffe" (default) or "pytorch"
    in_channels: int | None = None  # 3 RGB, 2 optical flow
    pretrained: str | None = None  # a pretrained tag, converted .safetensors, or a `p3d train` checkpoint
    imagenet_2d: str | None = None  # a 2D ImageNet ResNet state dict (torchvision/timm layout), paper Sec. 3.3
    temporal_init: str = "identity"  # temporal convs after a 2D init: "identity" or "paper" (gaussian 0.001)
    freeze_bn: bool = True  # paper: BatchNorm frozen except the first (bn_conv1)


@dataclass
class DataConfig:
    kind: str = "ucf101"  # ucf101, kinetics, activitynet, sports1m, folder, manifest
    root: str | None = None
    annotations: str | None = None  # split folder (ucf101), CSV (kinetics), JSON, list, manifest
    classes: str | None = None
    split: int | str | None = None  # ucf101: 1..3; kinetics: value of the CSV's split column for training
    train_subset: str | None = None  # ucf101: train; activitynet: training
    val_root: str | None = None  # folder / manifest kinds: the validation list (default: no validation)
    val_split: int | str | None = None  # kinetics: e.g. "val"; ucf101: same split number as training
    val_subset: str | None = None  # ucf101: test; activitynet: validation
    clip_len: int = 16
    size: list[int] = field(default_factory=lambda: [160, 160])
    resize: list[int] = field(default_factory=lambda: [182, 242])
    frame_stride: int = 1
    flip: bool = True  # random horizontal flip (turn off when left/right is the class, e.g. the demo)
    num_workers: int | None = None  # default: p3d.data.default_num_workers
    val_clips: int = 5  # clips per video for the periodic validation (the final test uses 20)
    val_max_videos: int | None = None  # cap the periodic validation (first N videos of the list)


@dataclass
class OptimConfig:
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step: int = 60000  # divide the learning rate by 10 every lr_step iterations
    lr_gamma: float = 0.1
    warmup: int = 0  # iterations of linear learning-rate warm-up (not in the paper; for training from scratch)
    iterations: int = 150000
    batch_size: int = 16  # clips per forward pass per process
    accum_steps: int = 8  # forward/backward passes per optimizer step (16 × 8 = the paper's 128)
    clip_grad: float | None = None


@dataclass
class RunConfig:
    out_dir: str = "runs/p3d"
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    amp: str = "none"  # none, bf16, fp16
    channels_last: bool = True
    compile: bool = False
    log_every: int = 20
    val_every: int = 1000  # 0: no periodic validation
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    progress: bool = True
    tensorboard: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> TrainConfig:
        cfg = cls()
        _merge(cfg, d, source)
        return cfg

    def validate(self) -> None:
        o, r, d = self.optim, self.run, self.data
        checks = [
            (o.lr > 0, f"optim.lr must be > 0, got {o.lr}"),
            (o.iterations >= 1, f"optim.iterations must be >= 1, got {o.iterations}"),
            (o.lr_step >= 1, f"optim.lr_step must be >= 1, got {o.lr_step}"),
            (o.warmup >= 0, f"optim.warmup must be >= 0, got {o.warmup}"),
            (o.batch_size >= 1, f"optim.batch_size must be >= 1, got {o.batch_size}"),
            (o.accum_steps >= 1, f"optim.accum_steps must be >= 1, got {o.accum_steps}"),
            (r.amp in ("none", "bf16", "fp16"), f"run.amp must be none, bf16 or fp16, got {r.amp!r}"),
            (r.log_every >= 1, f"run.log_every must be >= 1, got {r.log_every}"),
            (r.ckpt_every >= 0 and r.val_every >= 0, "run.ckpt_every and run.val_every must be >= 0"),
            (r.keep_checkpoints >= 1, f"run.keep_checkpoints must be >= 1, got {r.keep_checkpoints}"),
            (len(d.size) == 2 and len(d.resize) == 2, "data.size and data.resize must be [H, W]"),
            (d.val_clips >= 1, f"data.val_clips must be >= 1, got {d.val_clips}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


# Training tiny networks from scratch on the synthetic motion data (``p3d demo``): the paper's settings are for
# fine-tuning pretrained networks (frozen BN and lr 0.001 would barely move a random network), and the demo's
# classes are left/right and clockwise/counter-clockwise, which a horizontal flip would swap.
DEMO_OVERRIDES: dict[str, Any] = {
    "model": {"width": 8, "layers": [1, 1, 1, 1], "dropout": 0.0, "freeze_bn": False},
    "data": {"clip_len": 16, "size": [48, 48], "resize": [56, 56], "frame_stride": 2, "flip": False},
    "optim": {"lr": 0.02, "warmup": 50, "weight_decay": 5e-4, "batch_size": 8, "accum_steps": 1},
}


def _merge(obj: Any, d: dict[str, Any], where: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    names = {f.name: f for f in fields(obj)}
    for key, value in d.items():
        if key not in names:
            raise ValueError(f"{where}: unknown key {key!r}; expected one of {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}.{key}")
        else:
            if isinstance(value, tuple):
                value = list(value)
            setattr(obj, key, value)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults, then the YAML file ``path``, then ``section.key=value`` overrides; validated."""
    cfg = TrainConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: config file not found")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p}: not valid YAML ({e})") from None
        _merge(cfg, d, str(p))
    apply_overrides(cfg, overrides or [])
    cfg.validate()
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML) in order."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.01")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2:
            raise ValueError(f"--set {item!r}: the key must be section.key (sections: model, data, optim, run)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        _merge(cfg, {parts[0]: {parts[1]: value}}, "--set")
    return cfg


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from p3d.engine.checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(path), yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())
