"""Pretrained weights: tags, the converted-file format, and loading with loud mismatch errors.

No weights can be downloaded by this package.  A *tag* (``p3d199.kinetics400_rgb``) names one of the authors'
releases and says what it is: the architecture and options it needs, the preprocessing it was trained with, where
the original comes from.  Users convert their local copy once (``p3d convert ... --tag TAG``), which writes
``TAG.safetensors`` into the pretrained directory (``$P3D_PRETRAINED_DIR``, else ``~/.cache/p3d/pretrained``);
afterwards ``create_model("p3d199", pretrained="p3d199.kinetics400_rgb")`` finds it.

**File format.**  A converted file is a ``.safetensors`` state dict of the p3d model whose header metadata holds
``p3d.pretrained_cfg``: JSON with ``architecture``, ``options`` (constructor options), ``input`` (the
:class:`~p3d.spec.InputSpec`: channel order, mean, std, clip shape) and ``source``.  Next to it,
``FILE.safetensors.json`` repeats that config with the file's SHA-256 (a checksum cannot live inside the file it
covers).  Loading verifies the checksum against the sidecar and, when the tag records one, against the tag; the
model then carries the file's preprocessing as ``model.input_spec``, so prediction applies it automatically.

Loading a file whose architecture or keys do not fit the model is an error that shows the differing options and
the key-by-key :class:`~p3d.models.weights.LoadReport`; it never half-loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from p3d.errors import WeightLoadError
from p3d.models.weights import LoadReport, read_state_dict
from p3d.spec import InputSpec, caffe_bgr, caffe_flow

__all__ = [
    "PretrainedCfg",
    "PRETRAINED",
    "list_pretrained",
    "pretrained_cfg",
    "pretrained_dir",
    "resolve_pretrained",
    "pretrained_options",
    "save_pretrained",
    "read_pretrained",
    "read_metadata",
    "register_pretrained",
    "load_pretrained",
    "file_sha256",
    "METADATA_KEY",
]

METADATA_KEY = "p3d.pretrained_cfg"
_OFFICIAL = "https://github.com/ZhaofanQiu/pseudo-3d-residual-networks"


@dataclass(frozen=True)
class PretrainedCfg:
    """One released model.

    ``sha256`` is the checksum of the converted ``.safetensors`` when it is known.  The release files could not be
    obtained where this table was written, so the built-in tags carry none; the sidecar written by
    ``p3d convert`` still guards every local file, and :func:`register_pretrained` records a known checksum.
    """

    tag: str
    architecture: str
    options: dict[str, Any]
    input: InputSpec
    source: str
    description: str
    prototxt: str | None = None
    sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "architecture": self.architecture,
            "options": dict(self.options),
            "input": self.input.to_dict(),
            "source": self.source,
            "description": self.description,
            "prototxt": self.prototxt,
            "sha256": self.sha256,
        }


_P3D199 = {"layers": [3, 8, 36, 3], "pattern": "ABC", "width": 64, "style": "caffe"}

PRETRAINED: dict[str, PretrainedCfg] = {
    c.tag: c
    for c in (
        PretrainedCfg(
            "p3d199.sports1m_rgb",
            "p3d199",
            {**_P3D199, "num_classes": 487, "in_channels": 3, "dropout": 0.1},
            caffe_bgr(),
            f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Sports-1M)",
            "P3D-199 on Sports-1M, RGB frames: 487 classes (paper Sec. 4.2)",
            prototxt="deploy_p3d_resnet_sports1m.prototxt",
        ),
        PretrainedCfg(
            "p3d199.kinetics400_rgb",
            "p3d199",
            {**_P3D199, "num_classes": 400, "in_channels": 3, "dropout": 0.5},
            caffe_bgr(),
            f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Kinetics, RGB); also the port's p3d_rgb_199.checkpoint",
            "P3D-199 on Kinetics-400, RGB frames",
            prototxt="deploy_p3d_resnet_kinetics.prototxt",
        ),
        PretrainedCfg(
            "p3d199.kinetics400_flow",
            "p3d199",
            {**_P3D199, "num_classes": 400, "in_channels": 2, "dropout": 0.5},
            caffe_flow(),
            f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Kinetics, optical flow); also the port's "
            f"p3d_flow_199.checkpoint",
            "P3D-199 on Kinetics-400, optical flow (x, y) stored as 0..255 images, minus 128",
            prototxt="deploy_p3d_resnet_kinetics.prototxt",
        ),
    )
}

_FILES: dict[str, Path] = {}


def list_pretrained(pattern: str = "*") -> list[str]:
    """Known pretrained tags matching a glob ``pattern``."""
    from fnmatch import fnmatch

    return sorted(t for t in PRETRAINED if fnmatch(t, pattern))


def pretrained_cfg(tag: str) -> PretrainedCfg:
    if tag not in PRETRAINED:
        raise ValueError(f"unknown pretrained tag {tag!r}; known tags: {', '.join(list_pretrained())}")
    return PRETRAINED[tag]


def register_pretrained(tag: str, path: str | Path, sha256: str | None = None) -> None:
    """Point ``tag`` at a local converted file (and optionally record its expected SHA-256)."""
    cfg = pretrained_cfg(tag)
    _FILES[tag] = Path(path)
    if sha256 is not None:
        PRETRAINED[tag] = PretrainedCfg(**{**cfg.__dict__, "sha256": sha256.lower()})


def pretrained_dir() -> Path:
    """Where converted files are looked for by tag: the first of ``$P3D_PRETRAINED_DIR`` else the user cache."""
    env = os.environ.get("P3D_PRETRAINED_DIR")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return Path("~/.cache/p3d/pretrained").expanduser()


def resolve_pretrained(pretrained: str | Path) -> tuple[Path, PretrainedCfg | None]:
    """A file path or a tag → ``(file, tag config or None)``; a tag without a local file is a clear error."""
    s = str(pretrained)
    if s in PRETRAINED:
        cfg = PRETRAINED[s]
        candidates = [_FILES[s]] if s in _FILES else []
        dirs = os.environ.get("P3D_PRETRAINED_DIR", "")
        candidates += [Path(d).expanduser() / f"{s}.safetensors" for d in dirs.split(os.pathsep) if d]
        candidates.append(Path("~/.cache/p3d/pretrained").expanduser() / f"{s}.safetensors")
        for c in candidates:
            if c.is_file():
                return c, cfg
        raise FileNotFoundError(
            f"pretrained tag {s!r} has no local file (looked for {', '.join(str(c) for c in candidates)}). "
            f"Nothing is downloaded: get the original from {cfg.source} and convert it with "
            f"`p3d convert ORIGINAL --tag {s}`, or point to a file with "
            f"p3d.models.pretrained.register_pretrained / $P3D_PRETRAINED_DIR."
        )
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights not found: {path} (not a file, and not a known tag: {', '.join(list_pretrained())})"
        )
    return path, None


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def save_pretrained(
    model: nn.Module,
    path: str | Path,
    tag: str | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model``'s weights to ``path`` (``.safetensors``) with its config in the header and a sidecar JSON.

    The config is ``model.pretrained_cfg`` (architecture and options) plus ``model.input_spec``, ``tag`` and
    ``source``.  Returns the config as written, with ``sha256`` of the file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: converted weights are written as .safetensors")
    base = dict(getattr(model, "pretrained_cfg", {}) or {})
    if "architecture" not in base or "options" not in base:
        raise ValueError("model.pretrained_cfg needs 'architecture' and 'options' (build it with create_model)")
    cfg: dict[str, Any] = {
        "architecture": base["architecture"],
        "options": base["options"],
        "input": model.input_spec.to_dict(),
        "tag": tag,
        "source": dict(source if source is not None else base.get("source", {})),
        "format": 1,
    }
    sd = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={METADATA_KEY: json.dumps(cfg, sort_keys=True)})
    cfg["sha256"] = file_sha256(path)
    cfg["file"] = path.name
    _sidecar(path).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return cfg


def read_pretrained(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """State dict and embedded config (``None`` for files without one, e.g. a plain ``.pth``).

    A ``.safetensors`` file with a sidecar ``.json`` is checked against the sidecar's SHA-256 first.
    """
    path = Path(path)
    meta: dict[str, Any] | None = None
    side = _sidecar(path)
    if side.is_file():
        try:
            want = json.loads(side.read_text()).get("sha256")
        except json.JSONDecodeError as e:
            raise WeightLoadError(f"{side}: unreadable sidecar JSON ({e})") from e
        if want and file_sha256(path) != want:
            raise WeightLoadError(
                f"{path}: SHA-256 does not match the one recorded in {side.name} at conversion time: the file "
                f"was modified or truncated; convert it again"
            )
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
    return read_state_dict(path), meta


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The embedded config of a converted ``.safetensors`` file (header only), ``None`` if it has none."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise WeightLoadError(f"{path}: not a readable safetensors file ({e})") from e
    if METADATA_KEY not in header:
        return None
    try:
        return json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise WeightLoadError(f"{path}: corrupt {METADATA_KEY} metadata ({e})") from e


def pretrained_options(pretrained: str | Path, architecture: str) -> dict[str, Any]:
    """Constructor options ``create_model(architecture, pretrained=...)`` must use (class count, channels, …).

    From the tag's config or the file's embedded config; ``{}`` for a file without one.  A tag or file made for
    another architecture is an error here, before anything is built.
    """
    s = str(pretrained)
    if s in PRETRAINED:
        cfg: dict[str, Any] | None = PRETRAINED[s].to_dict()
        where = f"pretrained tag {s!r}"
    else:
        path = Path(s).expanduser()
        if not path.is_file():
            return {}  # resolve_pretrained reports the missing file with the full message
        cfg = read_metadata(path) if path.suffix == ".safetensors" else None
        where = str(path)
    if not cfg:
        return {}
    if cfg["architecture"] != architecture:
        raise WeightLoadError(
            f"{where} holds weights for {cfg['architecture']!r}, not {architecture!r}; "
            f"use create_model({cfg['architecture']!r}, pretrained=...)"
        )
    return dict(cfg["options"])


# Options that do not change which weights fit: dropout, and the class count (a new head is trained on top).
_FREE_OPTIONS = ("dropout", "num_classes")


def _classifier_differs(model: nn.Module, sd: Mapping[str, Tensor]) -> bool:
    """Whether ``model`` was built with another class count than the file's (fine-tuning: keep a fresh ``fc``)."""
    w = sd.get("fc.weight")
    fc = getattr(model, "fc", None)
    if w is None or not isinstance(fc, nn.Linear):
        return w is not None and isinstance(fc, nn.Identity)
    return w.dim() == 2 and w.shape[1] == fc.in_features and w.shape[0] != fc.out_features


def _port_layout(sd: Mapping[str, Tensor]) -> bool:
    return "conv1_custom.weight" in sd


def load_pretrained(model: nn.Module, pretrained: str | Path, strict: bool = True) -> LoadReport:
    """Load a converted file or a tag's file into ``model``; return the key-by-key report.

    Checks, in order: the file's checksum (sidecar and tag), that its embedded architecture options equal the
    model's, then every key and shape.  Any difference is a :class:`~p3d.errors.WeightLoadError` naming the file
    and listing what differs; nothing is copied unless everything fits.  A checkpoint of the PyTorch port
    (``conv1_custom``, …; see :mod:`p3d.convert.port`) is recognised and converted on the fly.  On success the
    model takes the file's preprocessing (``model.input_spec``) and records the provenance in
    ``model.pretrained_cfg['pretrained']``.
    """
    path, tag_cfg = resolve_pretrained(pretrained)
    if tag_cfg is not None and tag_cfg.sha256:
        got = file_sha256(path)
        if got != tag_cfg.sha256:
            raise WeightLoadError(
                f"{path}: SHA-256 {got} differs from the {tag_cfg.sha256} recorded for tag {tag_cfg.tag!r}"
            )
    sd, meta = read_pretrained(path)
    name = str(path)
    arch = dict(getattr(model, "pretrained_cfg", {}) or {})
    was_port = _port_layout(sd)
    if was_port:
        from p3d.convert.port import port_to_p3d

        sd = port_to_p3d(sd, model, source=name)
    if meta is not None and arch.get("options"):
        mine, theirs = arch["options"], meta.get("options", {})
        diff = {
            k: (mine.get(k), theirs.get(k))
            for k in sorted(set(mine) | set(theirs))
            if k in mine and k in theirs and mine[k] != theirs[k] and k not in _FREE_OPTIONS
        }
        if diff or meta.get("architecture") != arch.get("architecture"):
            lines = "\n".join(f"  {k}: model {a!r}, file {b!r}" for k, (a, b) in diff.items())
            raise WeightLoadError(
                f"{name}: holds {meta.get('architecture')!r} weights that do not match this "
                f"{arch.get('architecture')!r} model:\n{lines or '  (architecture name differs)'}\n"
                f"build the model with the file's options, e.g. create_model(NAME, pretrained=FILE)"
            )
    report = LoadReport(source=name)
    target = model.state_dict()
    new_head = _classifier_differs(model, sd)
    for key, want in target.items():
        if key.endswith("num_batches_tracked"):
            continue
        if new_head and key.startswith("fc."):
            got = list(sd[key].shape) if key in sd else None
            report.skipped.append(f"{key} (file {got}, model {list(want.shape)}: class count differs, kept fresh)")
            continue
        if key not in sd:
            report.missing.append(key)
        elif tuple(sd[key].shape) != tuple(want.shape):
            report.mismatched.append((key, tuple(want.shape), tuple(sd[key].shape)))
        else:
            report.loaded.append(key)
    report.unexpected = [k for k in sd if k not in target and not (new_head and k.startswith("fc."))]
    if strict and (not report.ok or report.unexpected):
        raise WeightLoadError(f"{name}: does not fit {arch.get('architecture', type(model).__name__)}\n{report}")
    with torch.no_grad():
        for key in report.loaded:
            target[key].copy_(sd[key].to(target[key].dtype))
    spec = None
    if meta is not None and meta.get("input"):
        spec = InputSpec.from_dict(meta["input"])
    elif tag_cfg is not None:
        spec = tag_cfg.input
    elif was_port:  # the port's weights are the authors' Caffe weights: their preprocessing applies
        spec = caffe_bgr() if model.in_channels == 3 else caffe_flow()
    if spec is not None:
        if spec.channels != getattr(model, "in_channels", spec.channels):
            raise WeightLoadError(f"{name}: preprocessing for {spec.channels} channels, model has {model.in_channels}")
        model.input_spec = spec
        if isinstance(getattr(model, "pretrained_cfg", None), dict):
            model.pretrained_cfg["input"] = spec.to_dict()
    if isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg["pretrained"] = {
            "file": name,
            "tag": tag_cfg.tag if tag_cfg else (meta or {}).get("tag"),
            "source": (meta or {}).get("source"),
        }
    return report
