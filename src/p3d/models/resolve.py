"""The one weights resolver: every form in which a user names weights, turned into a model.

Every command that takes weights (``test``, ``predict``, ``extract``, ``visualize``, ``export``, ``summary``,
``train --pretrained``) and :func:`p3d.create_model` go through :func:`resolve_weights` / :func:`load_model`.
Accepted forms:

=====================================  ==========================================================================
what the user writes                   what it is
=====================================  ==========================================================================
``p3d199.kinetics400_rgb``             a pretrained tag: its converted file in the pretrained directory
``model.safetensors``                  a self-describing file (``p3d convert``, ``p3d train``): config in the header,
                                       checked against its sidecar's SHA-256
``runs/x/checkpoints/ckpt-*.pt``       a ``p3d train`` checkpoint: the model, its config and class names
``runs/x``                             a ``p3d train`` run folder: its newest good checkpoint (else model.safetensors)
``p3d_rgb_199.checkpoint.pth.tar``     the PyTorch port's checkpoint: layout recognised and mapped
``weights.pth`` / ``.safetensors``     a plain state dict: needs ``--model NAME`` (the file does not say)
=====================================  ==========================================================================

The architecture, options, class names and preprocessing come from the weights; an explicit model name or option
that contradicts them is an error that says which is which.  ``num_classes`` and ``dropout`` may differ: a new
class count keeps a fresh classifier (fine-tuning).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from p3d.errors import IntegrityError, WeightLoadError
from p3d.fileio import sha256_file, tensor_digest
from p3d.models.config import PretrainedCfg
from p3d.models.port import is_port_layout, port_architecture, port_to_p3d
from p3d.models.pretrained import PRETRAINED, list_pretrained, read_metadata, sidecar, tag_file
from p3d.models.weights import LoadReport, read_state_dict, read_torch_file, unwrap_state_dict
from p3d.spec import InputSpec, caffe_bgr, caffe_flow

__all__ = [
    "TRAIN_CHECKPOINT_FORMAT",
    "FREE_OPTIONS",
    "Weights",
    "resolve_weights",
    "load_weights",
    "load_model",
    "run_checkpoints",
]

log = logging.getLogger(__name__)

# The marker of a `p3d train` checkpoint (written by p3d.engine.checkpoint; recognised here).
TRAIN_CHECKPOINT_FORMAT = "p3d-train-checkpoint"
# The key of a checkpoint's checksum: the tensor_digest of everything else in it.
CHECKPOINT_CHECKSUM_KEY = "sha256"
_CKPT_NAME = re.compile(r"^ckpt-(\d+)\.pt$")

# Options that do not change which weights fit: a new class count trains a new head; dropout is not a weight.
FREE_OPTIONS = ("dropout", "num_classes")


def state_checksum(state: Mapping[str, Any], where: object = "checkpoint") -> str:
    """The checksum a ``p3d train`` checkpoint records: :func:`p3d.fileio.tensor_digest` of its state without it.
    Content no checkpoint holds (a damaged pickle can unpickle to odd objects) is an error naming ``where``."""
    try:
        return tensor_digest({k: v for k, v in state.items() if k != CHECKPOINT_CHECKSUM_KEY})
    except (TypeError, ValueError, RuntimeError) as e:
        raise IntegrityError(f"{where}: damaged: content no checkpoint holds ({e})") from None


def run_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the ``ckpt-<iteration>.pt`` files in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_NAME.match(p.name)))


@dataclass
class Weights:
    """Resolved weights.  ``cfg`` is what they say about the model (``None``: a plain state dict that does not
    say); :meth:`state_dict` reads them (checksums verified), in p3d's key layout except for ``kind == "port"``."""

    origin: str  # as the user wrote it
    kind: str  # tag, safetensors, checkpoint, run, port, state_dict
    path: Path
    cfg: PretrainedCfg | None
    _state: dict[str, Tensor] | None = field(default=None, repr=False)
    _expected_sha: str | None = field(default=None, repr=False)

    def state_dict(self) -> dict[str, Tensor]:
        if self._state is None:
            self._state = _read_verified(self.path, self._expected_sha, self.origin)
        return self._state

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)


def _read_verified(path: Path, tag_sha: str | None, origin: str) -> dict[str, Tensor]:
    """A ``.safetensors`` state dict, checked against its sidecar's SHA-256 and the tag's when recorded."""
    side = sidecar(path)
    want = None
    if side.is_file():
        import json

        try:
            want = json.loads(side.read_text()).get("sha256")
        except (json.JSONDecodeError, OSError) as e:
            raise WeightLoadError(f"{side}: unreadable sidecar JSON ({e})") from e
    if want or tag_sha:
        got = sha256_file(path)
        if want and got != want:
            raise WeightLoadError(
                f"{path}: SHA-256 does not match the one recorded in {side.name} when it was written: the file "
                f"was modified or truncated; convert or export it again"
            )
        if tag_sha and got != tag_sha:
            raise WeightLoadError(f"{path}: SHA-256 {got} differs from the {tag_sha} recorded for tag {origin!r}")
    return read_state_dict(path)


def _legacy_checkpoint_cfg(state: Mapping[str, Any], where: str) -> PretrainedCfg:
    """The config of a checkpoint written before checkpoints carried their ``pretrained_cfg``."""
    model = dict(state["config"]["model"])
    classes = list(state.get("classes") or [])
    opts = {k: model[k] for k in ("pattern", "width", "layers", "dropout", "style", "in_channels") if model.get(k)}
    opts["num_classes"] = len(classes)
    spec = InputSpec.from_dict(state["input_spec"]) if state.get("input_spec") else InputSpec()
    return PretrainedCfg(model["name"], opts, spec, class_names=classes or None, source=f"p3d train ({where})")


def _torch_file(path: Path, origin: str) -> Weights:
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == TRAIN_CHECKPOINT_FORMAT:
        recorded = obj.get(CHECKPOINT_CHECKSUM_KEY)
        if recorded is not None and state_checksum(obj, path) != recorded:
            raise IntegrityError(
                f"{path}: damaged: its content differs from the SHA-256 recorded when it was written (flipped bits, "
                f"an edit or a bad copy)"
            )
        if "pretrained_cfg" in obj:
            cfg = PretrainedCfg.from_dict(obj["pretrained_cfg"], str(path))
        else:
            cfg = _legacy_checkpoint_cfg(obj, str(path))
        return Weights(origin, "checkpoint", path, cfg, dict(obj["model"]))
    sd = unwrap_state_dict(obj, path)
    if is_port_layout(sd):
        arch = port_architecture(sd, str(path))
        spec = caffe_bgr() if arch["in_channels"] == 3 else caffe_flow()  # the port's weights are the Caffe ones
        name = {(3, 4, 6, 3): "p3d63", (3, 4, 23, 3): "p3d131", (3, 8, 36, 3): "p3d199"}.get(tuple(arch["layers"]))
        cfg = PretrainedCfg(name or "p3d199", {**arch, "style": "caffe"}, spec, source=f"PyTorch port ({path.name})")
        return Weights(origin, "port", path, cfg, sd)
    return Weights(origin, "state_dict", path, None, sd)


def _run_folder(path: Path, origin: str) -> Weights:
    for _, p in reversed(run_checkpoints(path / "checkpoints")):
        try:
            w = _torch_file(p, origin)
        except (WeightLoadError, ValueError) as e:
            log.warning("skipping unreadable checkpoint %s: %s", p, e)
            continue
        w.kind = "run"
        return w
    final = path / "model.safetensors"
    if final.is_file():
        w = resolve_weights(final)
        w.kind, w.origin = "run", origin
        return w
    raise FileNotFoundError(
        f"{path}: a folder, but not a `p3d train` run (no readable checkpoints/ckpt-*.pt and no model.safetensors)"
    )


def resolve_weights(weights: str | Path) -> Weights:
    """What ``weights`` names (see the module docstring); nothing is loaded into a model yet."""
    s = str(weights)
    if s in PRETRAINED:
        tag = PRETRAINED[s]
        path = tag_file(s)
        cfg = read_metadata(path) or tag
        cfg = cfg.replace(tag=s, input=cfg.input if cfg is not tag else tag.input)
        return Weights(s, "tag", path, cfg, _expected_sha=tag.sha256)
    path = Path(weights).expanduser()
    if path.is_dir():
        return _run_folder(path, s)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights {s!r}: no such file or run folder, and not a pretrained tag (known tags: "
            f"{', '.join(list_pretrained())})"
        )
    if path.stat().st_size == 0:
        raise WeightLoadError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        return Weights(s, "safetensors", path, read_metadata(path))
    return _torch_file(path, s)


def _check_options(where: str, cfg: PretrainedCfg, name: str | None, options: Mapping[str, Any]) -> None:
    if name is not None and name != cfg.architecture:
        raise WeightLoadError(
            f"{where} holds weights for {cfg.architecture!r}, not {name!r}; use "
            f"create_model({cfg.architecture!r}, pretrained=...) (on the command line: drop --model, the weights "
            f"say what they are)"
        )
    diff = {
        k: (v, cfg.options[k])
        for k, v in options.items()
        if k in cfg.options and k not in FREE_OPTIONS and _norm(v) != _norm(cfg.options[k])
    }
    if diff:
        lines = "\n".join(f"  {k}: model {a!r}, file {b!r}" for k, (a, b) in diff.items())
        raise WeightLoadError(
            f"{where} holds {cfg.architecture!r} weights that do not fit the options asked for:\n{lines}\n"
            f"drop those options (the weights decide them), or choose other weights"
        )


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def load_weights(model: nn.Module, weights: str | Path | Weights, strict: bool = True) -> LoadReport:
    """Load resolved ``weights`` into ``model``; return the key-by-key report.

    Checks, in order: the file's checksum (sidecar and tag), that the architecture and options the weights record
    equal the model's, then every key and shape.  Any difference is a :class:`~p3d.errors.WeightLoadError` naming
    the file and listing what differs; nothing is copied unless everything fits.  A model built with another class
    count than the weights' keeps a fresh classifier.  On success ``model.pretrained_cfg`` takes the weights'
    preprocessing, class names and provenance.
    """
    w = weights if isinstance(weights, Weights) else resolve_weights(weights)
    mine: PretrainedCfg = model.pretrained_cfg
    where = str(w.path) if w.kind != "tag" else f"pretrained tag {w.origin!r} ({w.path})"
    if w.cfg is not None:
        _check_options(where, w.cfg, mine.architecture, mine.options)
    sd = w.state_dict()
    target = model.state_dict()
    if w.kind == "port":
        sd = port_to_p3d(sd, target)
    head = f"{mine.classifier}."
    new_head = _classifier_differs(model, sd, head)
    report = LoadReport(source=str(w.path))
    for key, want in target.items():
        if key.endswith("num_batches_tracked"):
            continue
        if new_head and key.startswith(head):
            got = list(sd[key].shape) if key in sd else None
            report.skipped.append(f"{key} (file {got}, model {list(want.shape)}: class count differs, kept fresh)")
        elif key not in sd:
            report.missing.append(key)
        elif tuple(sd[key].shape) != tuple(want.shape):
            report.mismatched.append((key, tuple(want.shape), tuple(sd[key].shape)))
        else:
            report.loaded.append(key)
    report.unexpected = [k for k in sd if k not in target and not (new_head and k.startswith(head))]
    report.unexpected = [k for k in report.unexpected if not k.endswith("num_batches_tracked")]
    if strict and (not report.ok or report.unexpected):
        raise WeightLoadError(f"{where}: does not fit {mine.architecture} {dict(mine.options)}\n{report}")
    with torch.no_grad():
        for key in report.loaded:
            target[key].copy_(sd[key].to(target[key].dtype))
    theirs = w.cfg
    spec = theirs.input if theirs is not None else mine.input
    if spec.channels != mine.in_channels:
        raise WeightLoadError(
            f"{where}: preprocessing for {spec.channels} channels, the model takes {mine.in_channels}"
        )
    classes = theirs.class_names if theirs is not None and not new_head else None
    model.pretrained_cfg = mine.replace(
        input=spec,
        class_names=classes,
        tag=theirs.tag if theirs is not None else None,
        source=(theirs.source if theirs is not None else "") or w.kind,
        file=str(w.path),
        sha256=None,
        extra={**mine.extra, **(dict(theirs.extra) if theirs is not None else {})},
    )
    return report


def _classifier_differs(model: nn.Module, sd: Mapping[str, Tensor], head: str) -> bool:
    """Whether ``model`` was built with another class count than the file's (fine-tuning: keep a fresh head)."""
    w = sd.get(f"{head}weight")
    fc = model.get_submodule(head[:-1]) if hasattr(model, head[:-1]) else None
    if w is None:
        return False
    if not isinstance(fc, nn.Linear):
        return isinstance(fc, nn.Identity)
    return w.dim() == 2 and w.shape[1] == fc.in_features and w.shape[0] != fc.out_features


def load_model(
    weights: str | Path | Weights, model: str | None = None, *, strict: bool = True, **options: Any
) -> nn.Module:
    """Build the model ``weights`` describe and load them into it (see the module docstring).

    Args:
        weights: any form of :func:`resolve_weights`.
        model: registry name; required only for a plain state dict, otherwise it must agree with the weights.
        options: constructor options; only ``num_classes`` (a fresh head) and ``dropout`` may differ from the
            weights'.  For a plain state dict they build the model.
    Returns:
        the model (in training mode, as ``create_model``), with ``model.pretrained_cfg`` describing the weights.
    """
    from p3d.models.registry import create_model

    w = weights if isinstance(weights, Weights) else resolve_weights(weights)
    if w.cfg is None:
        if model is None:
            raise ValueError(
                f"{w.path}: a plain state dict that does not say which model it is for; give the model name "
                f"(--model NAME / create_model(NAME, pretrained=...))"
            )
        name, base = model, {}
    else:
        where = str(w.path) if w.kind != "tag" else f"pretrained tag {w.origin!r}"
        _check_options(where, w.cfg, model, options)
        name, base = w.cfg.architecture, dict(w.cfg.options)
    net = create_model(name, **{**base, **options})
    load_weights(net, w, strict=strict)
    return net
