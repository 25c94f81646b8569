"""Training configuration: a typed schema with the paper's protocol as defaults, YAML files, dotted overrides.

Defaults follow the paper (Sec. 4.1): SGD with momentum 0.9, learning rate 0.001 divided by 10 every 60K
iterations, 150K iterations, 128 clips per iteration (here ``batch_size × accum_steps × world size``),
16×160×160 clips from frames resized to 182×242, every BatchNorm frozen except the first.  The paper does not
state a weight decay; 1e-4 is ResNet's (He et al. 2016).  Dropout is the model's (0.5) unless set — 0.9 is the
paper's choice for fine-tuning on UCF101.  These settings are for fine-tuning pretrained networks;
:data:`DEMO_OVERRIDES` (used by ``p3d demo``) trains tiny networks from scratch instead.

Every field has a declared type, a range or a set of choices, and a one-line meaning (``p3d train
--print-config`` lists them).  A run's configuration is resolved in this order: defaults, then a YAML file (same
nesting as the sections), then command-line flags, then ``--set section.key=value`` overrides.  Every value is
checked where it enters, against its field's type and range, and a wrong one is one line naming the key, the value
and what is expected.  ``--set`` text is read by the field's type (a string field takes the text verbatim, so
``--set run.out_dir=2024-01-01`` stays a string; lists and booleans are parsed as YAML); flags are set as typed
values and never round-trip through text.  The resolved configuration is written to ``<run dir>/config.yaml``.

Resuming (:func:`resume_config`): the run's saved configuration is the base, and the settings given again (a YAML
file's keys, flags, ``--set``) that differ from it are changes.  Those in :data:`CHANGEABLE_ON_RESUME` (learning
rate and schedule, iteration budget, optimiser constants, validation, checkpointing, logging, device and
precision, decoding processes) are applied and logged; the others define the run (architecture and
initialisation, training data and classes, clip sampling, batch size × accumulation, seed) and are refused with
the reason.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
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
    "DEFAULT_MODEL",
    "load_config",
    "apply_overrides",
    "save_config",
    "describe_config",
    "CHANGEABLE_ON_RESUME",
    "given_keys",
    "resume_config",
]

DEFAULT_MODEL = "p3d199"


# ------------------------------------------------------------------------------------------------ field checks
def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _at_least_one(v: Any) -> str | None:
    return None if v >= 1 else "must be >= 1"


def _fraction(v: Any) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def _pair_of_positive(v: Any) -> str | None:
    return None if len(v) == 2 and min(v) >= 1 else "must be [H, W], two positive integers"


def _four_positive(v: Any) -> str | None:
    return None if len(v) == 4 and min(v) >= 1 else "must be 4 positive stage depths [res2, res3, res4, res5]"


def _pattern(v: Any) -> str | None:
    return None if v and set(v) <= set("ABCS") else "must be a non-empty string over A, B, C (S: 2D)"


def _f(default: Any = None, help: str = "", check: Callable[[Any], str | None] | None = None, **kw: Any) -> Any:
    """A schema field: default, one-line meaning, optional range check or ``choices``."""
    meta = {"help": help, "check": check, "choices": kw.pop("choices", None)}
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    name: str | None = _f(None, f"registry name (default {DEFAULT_MODEL}, or the architecture of model.pretrained)")
    pattern: str | None = _f(None, "P3D block cycle: ABC (registry default), A, B or C", _pattern)
    width: int | None = _f(None, "channels of conv1 (registry default 64; e.g. 8 for a tiny CPU model)", _at_least_one)
    layers: list[int] | None = _f(None, "units per stage res2..res5 (e.g. [1,1,1,1] for a tiny model)", _four_positive)
    dropout: float | None = _f(None, "pool5 dropout (model default 0.5; paper: 0.9 for UCF101)", _fraction)
    style: str | None = _f(None, "stride placement: caffe (official files) or pytorch", choices=("caffe", "pytorch"))
    in_channels: int | None = _f(None, "input channels: 3 RGB, 2 optical flow", choices=(2, 3))
    pretrained: str | None = _f(None, "initial weights: tag, .safetensors, train checkpoint or run folder")
    imagenet_2d: str | None = _f(None, "a 2D ImageNet ResNet state dict to initialise from (paper Sec. 3.3)")
    temporal_init: str = _f("identity", "temporal convs after a 2D init", choices=("identity", "paper"))
    freeze_bn: bool = _f(True, "freeze every BatchNorm except the first (paper Sec. 4.1)")


@dataclass
class DataConfig:
    kind: str = _f("ucf101", "dataset format", choices=("ucf101", "kinetics", "activitynet", "sports1m", "folder",
                                                          "manifest"))  # fmt: skip
    root: str | None = _f(None, "dataset folder (manifest kind: the manifest file)")
    annotations: str | None = _f(None, "split folder (ucf101), CSV (kinetics), JSON (activitynet), list (sports1m)")
    classes: str | None = _f(None, "class names file, one per line")
    split: int | str | None = _f(None, "ucf101: 1..3; kinetics: the CSV split value used for training")
    train_subset: str | None = _f(None, "ucf101: train; activitynet: training")
    val_root: str | None = _f(None, "folder / manifest kinds: the validation list (default: no validation)")
    val_split: int | str | None = _f(None, "kinetics: e.g. val; ucf101: default the training split's number")
    val_subset: str | None = _f(None, "ucf101: test; activitynet: validation")
    clip_len: int = _f(16, "frames per clip (paper 16)", _at_least_one)
    size: list[int] = _f([160, 160], "crop size [H, W] (paper 160×160)", _pair_of_positive)
    resize: list[int] = _f([182, 242], "frames resized to [H, W] before cropping (paper 182×242)", _pair_of_positive)
    frame_stride: int = _f(1, "take every N-th frame", _at_least_one)
    flip: bool = _f(True, "random horizontal flip (off when left/right is the class)")
    num_workers: int | None = _f(None, "decoding processes (default: the spare cores; 0 = in-process)", _non_negative)
    val_clips: int = _f(5, "clips per video in periodic validation (the final test uses 20)", _at_least_one)
    val_max_videos: int | None = _f(None, "cap the periodic validation at the first N videos", _at_least_one)


@dataclass
class OptimConfig:
    lr: float = _f(0.001, "base learning rate (paper 0.001)", _positive)
    momentum: float = _f(0.9, "SGD momentum (paper 0.9)", _fraction)
    weight_decay: float = _f(1e-4, "L2 weight decay (ResNet's 1e-4)", _non_negative)
    lr_step: int = _f(60000, "divide the lr by 10 every N iterations", _at_least_one)
    lr_gamma: float = _f(0.1, "lr multiplier at each step", _positive)
    warmup: int = _f(0, "iterations of linear lr warm-up (not in the paper; for training from scratch)", _non_negative)
    iterations: int = _f(150000, "optimizer steps in all (paper 150K)", _at_least_one)
    batch_size: int = _f(16, "clips per forward pass per process", _at_least_one)
    accum_steps: int = _f(8, "forward passes per optimizer step (16 × 8 = the paper's 128 clips)", _at_least_one)
    clip_grad: float | None = _f(None, "clip the gradient norm at this value", _positive)


@dataclass
class RunConfig:
    out_dir: str = _f("runs/p3d", "run folder: config, checkpoints, metrics, final weights")
    seed: int = _f(0, "random seed (data order, augmentation, initialisation)", _non_negative)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    amp: str = _f("none", "mixed precision", choices=("none", "bf16", "fp16"))
    channels_last: bool = _f(True, "channels-last weights and activations")
    compile: bool = _f(False, "torch.compile the model")
    log_every: int = _f(20, "log metrics every N iterations", _at_least_one)
    val_every: int = _f(1000, "validate every N iterations (0: never)", _non_negative)
    ckpt_every: int = _f(1000, "checkpoint every N iterations (0: only at the end and on signals)", _non_negative)
    keep_checkpoints: int = _f(3, "keep the newest N checkpoints", _at_least_one)
    progress: bool = _f(True, "progress bar")
    tensorboard: bool = _f(True, "TensorBoard event files in <run>/tb")


SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "run": RunConfig}


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
        cfg.update(d, source)
        return cfg

    def update(self, d: dict[str, Any], source: str = "config") -> TrainConfig:
        """Merge a nested mapping (``{"optim": {"lr": 0.01}}``), checking every key and value."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)}), got {_kind(d)}")
        for section, values in d.items():
            if section not in SECTIONS:
                raise ValueError(f"{source}: unknown key {section!r}; expected one of {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ValueError(f"{source}.{section}: expected a mapping of keys, got {_kind(values)}")
            for key, value in values.items():
                self.set(f"{section}.{key}", value, source)
        return self

    def set(self, key: str, value: Any, source: str = "config") -> None:
        """Set ``section.key`` to a typed ``value`` after checking it against the schema."""
        section, f = _field(key, source)
        setattr(getattr(self, section), f.name, check_value(key, value, f, source))

    def validate(self) -> None:
        """Cross-field checks (each field was checked when it was set)."""
        for section, cls in SECTIONS.items():
            for f in fields(cls):
                check_value(f"{section}.{f.name}", getattr(getattr(self, section), f.name), f, "config")


def _kind(v: Any) -> str:
    return type(v).__name__


def _field(key: str, source: str) -> tuple[str, dataclasses.Field]:
    parts = key.strip().split(".")
    if len(parts) != 2:
        raise ValueError(f"{source}: {key!r}: the key must be section.key (sections: {', '.join(SECTIONS)})")
    section, name = parts
    if section not in SECTIONS:
        raise ValueError(f"{source}: unknown key {section!r}; expected one of {', '.join(SECTIONS)}")
    by_name = {f.name: f for f in fields(SECTIONS[section])}
    if name not in by_name:
        raise ValueError(f"{source}.{section}: unknown key {name!r}; expected one of {', '.join(by_name)}")
    return section, by_name[name]


def _field_type(f: dataclasses.Field) -> Any:
    owner = next(c for c in SECTIONS.values() if f in fields(c))
    return typing.get_type_hints(owner)[f.name]


def _alternatives(tp: Any) -> tuple[list[Any], bool]:
    """The member types of a field type (``int | str | None`` → ``[int, str]``) and whether null is allowed."""
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return [a for a in members if a is not type(None)], type(None) in members


def type_name(f: dataclasses.Field) -> str:
    """``float``, ``int or null``, ``list of int``, ``one of none, bf16, fp16`` …"""
    choices = f.metadata.get("choices")
    kinds, optional = _alternatives(_field_type(f))
    if choices:
        base = "one of " + ", ".join(map(str, choices))
    else:
        base = " or ".join("list of int" if typing.get_origin(a) is list else a.__name__ for a in kinds)
    return base + (" or null" if optional else "")


def check_value(key: str, value: Any, f: dataclasses.Field, source: str) -> Any:
    """``value`` converted to field ``f``'s type, or a one-line ``ValueError`` naming the key, the value and what
    is expected.  Booleans are never numbers; integers never accept fractions; floats must be finite."""
    args, optional = _alternatives(_field_type(f))
    expected = type_name(f)

    def bad(why: str = "") -> ValueError:
        return ValueError(f"{source}: {key}={value!r}: expected {expected}{f' ({why})' if why else ''}")

    if value is None:
        if optional:
            return None
        raise bad()
    out: Any = None
    for a in args:
        if a is bool:
            if isinstance(value, bool):
                out = value
        elif a is int:
            if isinstance(value, int) and not isinstance(value, bool):
                out = value
            elif isinstance(value, float) and value.is_integer() and math.isfinite(value):
                out = int(value)
        elif a is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out = float(value)
            elif isinstance(value, str):
                try:
                    out = float(value)
                except ValueError:
                    out = None
            if out is not None and not math.isfinite(out):
                raise bad("must be finite")
        elif a is str:
            if isinstance(value, str):
                out = value
        elif typing.get_origin(a) is list:
            if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                out = [int(v) for v in value]
        if out is not None:
            break
    if out is None:
        raise bad()
    choices = f.metadata.get("choices")
    if choices and out not in choices:
        raise bad()
    check = f.metadata.get("check")
    if check is not None:
        why = check(out)
        if why:
            raise bad(why)
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """``section.key=text`` → ``(key, value)`` read by the field's type: string fields take the text verbatim (``null``
    or ``~`` is null where allowed), other fields parse it as YAML (``[1,1,1,1]``, ``true``, ``0.01``)."""
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected section.key=value, e.g. optim.lr=0.01")
    key, raw = item.split("=", 1)
    _, f = _field(key, "--set")
    kinds, optional = _alternatives(_field_type(f))
    text = raw.strip()
    if text in ("", "null", "~", "None") and optional:
        return key, None
    if kinds == [str]:
        return key, raw
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = raw
    if str in kinds and not isinstance(value, (int, str)):  # int | str fields (split): keep non-ints as text
        value = raw
    return key, value


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` strings in order (see :func:`parse_override`)."""
    for item in overrides:
        key, value = parse_override(item)
        cfg.set(key, value, "--set")
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
    flag_names: dict[str, str] | None = None,
) -> TrainConfig:
    """Defaults, then the YAML file ``path``, then typed ``flags`` (``{"optim.lr": 0.01}``), then ``section.key=value``
    overrides; every value checked.  ``flag_names`` (``{"data.num_workers": "--workers"}``) names the command-line
    flag of a key in errors (default ``--<field>``)."""
    cfg = TrainConfig()
    if path is not None:
        cfg.update(_read_yaml(path), str(path))
    for key, value in (flags or {}).items():
        cfg.set(key, value, (flag_names or {}).get(key) or f"--{key.split('.', 1)[1].replace('_', '-')}")
    apply_overrides(cfg, overrides or [])
    cfg.validate()
    return cfg


def _read_yaml(path: str | Path) -> Any:
    from p3d.fileio import read_text

    p = Path(path)
    text = read_text(p, "YAML config file")
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved configuration as YAML (atomically)."""
    from p3d.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def describe_config(cfg: TrainConfig | None = None) -> str:
    """The full configuration as commented YAML: every field's value, type, default and meaning."""
    cfg = cfg or TrainConfig()
    lines = ["# p3d train configuration: value  # type (default): meaning"]
    for section, cls in SECTIONS.items():
        lines.append(f"{section}:")
        for f in fields(cls):
            value = getattr(getattr(cfg, section), f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            dflt = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"  {f.name}: {text}  # {type_name(f)} (default {dflt}): {f.metadata.get('help', '')}")
    return "\n".join(lines) + "\n"


# Training tiny networks from scratch on the synthetic motion data (``p3d demo``): the paper's settings are for
# fine-tuning pretrained networks (frozen BN and lr 0.001 would barely move a random network), and the demo's
# classes are left/right and clockwise/counter-clockwise, which a horizontal flip would swap.
DEMO_OVERRIDES: dict[str, Any] = {
    "model": {"width": 8, "layers": [1, 1, 1, 1], "dropout": 0.0, "freeze_bn": False},
    "data": {"clip_len": 16, "size": [48, 48], "resize": [56, 56], "frame_stride": 2, "flip": False},
    "optim": {"lr": 0.02, "warmup": 50, "weight_decay": 5e-4, "batch_size": 8, "accum_steps": 1},
}


# ------------------------------------------------------------------------------------------------ resuming
CHANGEABLE_ON_RESUME = frozenset(
    {
        "optim.lr", "optim.lr_step", "optim.lr_gamma", "optim.warmup", "optim.iterations", "optim.momentum",
        "optim.weight_decay", "optim.clip_grad",
        "data.num_workers", "data.val_root", "data.val_split", "data.val_subset", "data.val_clips",
        "data.val_max_videos",
        "run.out_dir", "run.device", "run.amp", "run.channels_last", "run.compile", "run.log_every", "run.val_every",
        "run.ckpt_every", "run.keep_checkpoints", "run.progress", "run.tensorboard",
    }
)  # fmt: skip
_FIXED = {
    "model": "the checkpoint's weights are this architecture and initialisation",
    "data": "the classifier and the saved data position refer to this training list and clip sampling",
    "optim.batch_size": "batch size and accumulation steps define the saved data position (batches consumed)",
    "optim.accum_steps": "batch size and accumulation steps define the saved data position (batches consumed)",
    "run.seed": "the seed fixes the data order and augmentation of the whole run",
}


def _keys() -> list[str]:
    return [f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)]


def _get(cfg: TrainConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def given_keys(
    path: str | Path | None = None, overrides: Iterable[str] = (), flags: dict[str, Any] | None = None
) -> set[str]:
    """The keys a YAML file, typed flags and ``--set`` overrides set: what a resumed run is asked to change (the
    others keep the run's saved values)."""
    keys = set(flags or {})
    if path is not None:
        d = _read_yaml(path)
        if isinstance(d, dict):
            keys |= {f"{sec}.{k}" for sec, values in d.items() if isinstance(values, dict) for k in values}
    keys |= {parse_override(o)[0].strip() for o in overrides}
    return keys


def resume_config(
    saved: TrainConfig, requested: TrainConfig, given: Iterable[str] | None = None, where: str = "run"
) -> tuple[TrainConfig, dict[str, tuple[Any, Any]]]:
    """The configuration a resumed run continues with, and its changes ``{key: (saved, new)}``.

    ``saved``: the checkpoint's configuration; ``requested``: the one asked for now; ``given``: the keys set
    explicitly (:func:`given_keys`; ``None``: every key of ``requested``).  Raises one ``ValueError`` naming every
    refused change and why (see the module docstring)."""
    out = TrainConfig.from_dict(saved.to_dict(), where)
    keys = _keys() if given is None else [k for k in _keys() if k in set(given)]
    changes = {k: (_get(saved, k), _get(requested, k)) for k in keys if _get(saved, k) != _get(requested, k)}
    refused = {k: v for k, v in changes.items() if k not in CHANGEABLE_ON_RESUME}
    if refused:
        detail = "; ".join(
            f"{k} {old!r} -> {new!r} ({_FIXED.get(k) or _FIXED[k.split('.')[0]]})" for k, (old, new) in refused.items()
        )
        raise ValueError(
            f"{where}: cannot resume with {detail}; keep these settings, or start a new run (--pretrained can "
            f"initialise it from this run's checkpoint)"
        )
    for k, (_, new) in changes.items():
        out.set(k, new, "resume")
    out.run.out_dir = requested.run.out_dir
    return out, changes
