"""Pretrained weights: the release tags and the self-describing ``.safetensors`` file p3d writes.

No weights can be downloaded by this package.  A *tag* (``p3d199.kinetics400_rgb``) names one of the authors'
releases and says what it is (a :class:`~p3d.models.config.PretrainedCfg`: architecture and options, the
preprocessing it was trained with, where the original comes from).  Users convert their local copy once
(``p3d convert ... --tag TAG``), which writes ``TAG.safetensors`` into the pretrained directory
(``$P3D_PRETRAINED_DIR``, else ``~/.cache/p3d/pretrained``); afterwards ``create_model("p3d199",
pretrained="p3d199.kinetics400_rgb")`` finds it.

**File format.**  A ``.safetensors`` state dict of the p3d model whose header metadata ``p3d.pretrained_cfg`` holds
the model's :class:`~p3d.models.config.PretrainedCfg` as JSON (architecture, options, input spec, class names,
provenance).  Next to it, ``FILE.safetensors.json`` repeats that config with the file's SHA-256 (a checksum cannot
live inside the file it covers).  ``p3d convert``, ``p3d train`` (its ``model.safetensors``) and
:func:`save_pretrained` write it; :mod:`p3d.models.resolve` reads it, with every other form of weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from p3d.errors import WeightLoadError
from p3d.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes
from p3d.models.config import PretrainedCfg
from p3d.spec import caffe_bgr, caffe_flow

__all__ = [
    "PRETRAINED",
    "METADATA_KEY",
    "list_pretrained",
    "get_pretrained_cfg",
    "register_pretrained",
    "pretrained_dir",
    "tag_file",
    "save_pretrained",
    "read_metadata",
    "sidecar",
]

METADATA_KEY = "p3d.pretrained_cfg"
_OFFICIAL = "https://github.com/ZhaofanQiu/pseudo-3d-residual-networks"
_P3D199 = {"layers": [3, 8, 36, 3], "pattern": "ABC", "width": 64, "style": "caffe"}

# The built-in tags carry no checksums: the release files could not be obtained where this table was written; the
# sidecar written by ``p3d convert`` still guards every local file, and :func:`register_pretrained` records one.
PRETRAINED: dict[str, PretrainedCfg] = {
    c.tag: c  # type: ignore[misc]
    for c in (
        PretrainedCfg(
            "p3d199",
            {**_P3D199, "num_classes": 487, "in_channels": 3, "dropout": 0.1},
            caffe_bgr(),
            tag="p3d199.sports1m_rgb",
            source=f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Sports-1M)",
            description="P3D-199 on Sports-1M, RGB frames: 487 classes (paper Sec. 4.2)",
            prototxt="deploy_p3d_resnet_sports1m.prototxt",
        ),
        PretrainedCfg(
            "p3d199",
            {**_P3D199, "num_classes": 400, "in_channels": 3, "dropout": 0.5},
            caffe_bgr(),
            tag="p3d199.kinetics400_rgb",
            source=f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Kinetics, RGB); also the port's "
            f"p3d_rgb_199.checkpoint",
            description="P3D-199 on Kinetics-400, RGB frames",
            prototxt="deploy_p3d_resnet_kinetics.prototxt",
        ),
        PretrainedCfg(
            "p3d199",
            {**_P3D199, "num_classes": 400, "in_channels": 2, "dropout": 0.5},
            caffe_flow(),
            tag="p3d199.kinetics400_flow",
            source=f"{_OFFICIAL} (Caffe, P3D ResNet-199 trained on Kinetics, optical flow); also the port's "
            f"p3d_flow_199.checkpoint",
            description="P3D-199 on Kinetics-400, TV-L1 optical flow (x, y) stored as 0..255 images, minus 128",
            prototxt="deploy_p3d_resnet_kinetics.prototxt",
        ),
    )
}

_FILES: dict[str, Path] = {}


def list_pretrained(pattern: str = "*") -> list[str]:
    """Known pretrained tags matching a glob ``pattern``."""
    from fnmatch import fnmatch

    return sorted(t for t in PRETRAINED if fnmatch(t, pattern))


def get_pretrained_cfg(tag: str) -> PretrainedCfg:
    """The release a tag names; an unknown tag is an error listing the known ones."""
    if tag not in PRETRAINED:
        raise ValueError(f"unknown pretrained tag {tag!r}; known tags: {', '.join(list_pretrained())}")
    return PRETRAINED[tag]


def register_pretrained(tag: str, path: str | Path, sha256: str | None = None) -> None:
    """Point ``tag`` at a local converted file (and optionally record its expected SHA-256)."""
    cfg = get_pretrained_cfg(tag)
    _FILES[tag] = Path(path)
    if sha256 is not None:
        PRETRAINED[tag] = cfg.replace(sha256=sha256.lower())


def pretrained_dir() -> Path:
    """Where converted files are written by tag: the first of ``$P3D_PRETRAINED_DIR``, else the user cache."""
    env = os.environ.get("P3D_PRETRAINED_DIR")
    if env:
        return Path(env.split(os.pathsep)[0]).expanduser()
    return Path("~/.cache/p3d/pretrained").expanduser()


def tag_file(tag: str) -> Path:
    """The local file of a tag: registered, else ``TAG.safetensors`` in ``$P3D_PRETRAINED_DIR`` (every entry) or the
    user cache.  A tag without a local file is an error that says how to make one."""
    cfg = get_pretrained_cfg(tag)
    candidates = [_FILES[tag]] if tag in _FILES else []
    dirs = os.environ.get("P3D_PRETRAINED_DIR", "")
    candidates += [Path(d).expanduser() / f"{tag}.safetensors" for d in dirs.split(os.pathsep) if d]
    candidates.append(Path("~/.cache/p3d/pretrained").expanduser() / f"{tag}.safetensors")
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"pretrained tag {tag!r} has no local file (looked for {', '.join(str(c) for c in candidates)}). "
        f"Nothing is downloaded: get the original from {cfg.source} and convert it with "
        f"`p3d convert ORIGINAL --tag {tag}`, or point to a file with "
        f"p3d.models.pretrained.register_pretrained / $P3D_PRETRAINED_DIR."
    )


def sidecar(path: Path) -> Path:
    """``FILE.safetensors.json``: the config and SHA-256 written next to a converted file."""
    return path.with_name(path.name + ".json")


def save_pretrained(model: nn.Module, path: str | Path, tag: str | None = None, **extra: Any) -> PretrainedCfg:
    """Write ``model``'s weights and its ``pretrained_cfg`` to ``path`` (``.safetensors``) and the sidecar JSON,
    both atomically.  ``extra`` goes into the config's ``extra`` (provenance).  Returns the config as written, with
    the file's SHA-256."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: weights are written as .safetensors")
    cfg: PretrainedCfg | None = getattr(model, "pretrained_cfg", None)
    if not isinstance(cfg, PretrainedCfg):
        raise ValueError("the model has no pretrained_cfg (build it with p3d.create_model)")
    cfg = cfg.replace(tag=tag or cfg.tag, file=None, sha256=None, extra={**cfg.extra, **extra})
    sd = {
        k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    data = save(sd, metadata={METADATA_KEY: json.dumps(cfg.to_dict(), sort_keys=True)})
    atomic_write_bytes(path, data)
    written = cfg.replace(file=path.name, sha256=sha256_bytes(data))
    atomic_write_json(sidecar(path), written.to_dict(), indent=2)
    return written


def _from_header(d: Mapping[str, Any], where: str) -> PretrainedCfg:
    """The config of a header; files of format 1 (before the one config object) kept their provenance as a
    ``source`` dict and a ``format`` key."""
    d = dict(d)
    d.pop("format", None)
    if isinstance(d.get("source"), Mapping):
        d["extra"] = {**d.get("extra", {}), **d.pop("source")}
    return PretrainedCfg.from_dict(d, where)


def read_metadata(path: str | Path) -> PretrainedCfg | None:
    """The embedded config of a ``.safetensors`` file (header only), ``None`` if it has none."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise WeightLoadError(f"{path}: not a readable safetensors file ({e})") from e
    if METADATA_KEY not in header:
        return None
    try:
        return _from_header(json.loads(header[METADATA_KEY]), f"{path} ({METADATA_KEY})")
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise WeightLoadError(f"{path}: corrupt {METADATA_KEY} metadata ({e})") from e
