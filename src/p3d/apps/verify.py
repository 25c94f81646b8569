"""``p3d verify``: which parts of a feature store, a training run, a checkpoint or a weight file are intact.

Every file p3d writes for a later step records a checksum: feature parts carry the SHA-256 of their tensors and
header (:mod:`p3d.representation.store`), training checkpoints of their whole state
(:mod:`p3d.engine.checkpoint`), ``.safetensors`` weights have it in their sidecar ``FILE.safetensors.json``
(:mod:`p3d.models.pretrained`).  :func:`verify_path` reads each file back, recomputes it and reports every file
as ``intact`` (the checksum matches), ``unverified`` (written before checksums, or without a sidecar, but it
reads and is consistent) or ``damaged`` (with the reason), without stopping at the first damaged one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from p3d.fileio import lock_holder, sha256_file

__all__ = ["Finding", "VerifyReport", "verify_path"]


@dataclass
class Finding:
    """One file: ``status`` is ``intact``, ``unverified`` or ``damaged``; ``detail`` says what it holds or what
    is wrong."""

    path: Path
    status: str
    detail: str = ""


@dataclass
class VerifyReport:
    """What :func:`verify_path` found: the kind of thing checked, one finding per file, and notes (counts,
    duplicates, an active writer)."""

    path: Path
    kind: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.status != "damaged" for f in self.findings)

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.findings)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "ok": self.ok,
            "files": [{"path": str(f.path), "status": f.status, "detail": f.detail} for f in self.findings],
            "notes": self.notes,
        }


def verify_path(path: str | Path) -> VerifyReport:
    """Check a feature store directory, a merged feature file, a ``p3d train`` run folder, a training checkpoint
    or a ``.safetensors`` weight file (told apart by their content)."""
    p = Path(path)
    if p.is_dir():
        from p3d.representation.store import META_NAME, list_parts

        if list_parts(p) or (p / META_NAME).is_file():
            return _store(p)
        if (p / "checkpoints").is_dir() or (p / "config.yaml").is_file() or (p / "model.safetensors").is_file():
            return _run(p)
        raise ValueError(f"{p}: neither a feature store (part-r*.safetensors, meta.json) nor a p3d train run folder")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.suffix == ".safetensors":
        if _is_feature_file(p):
            return _store(p)
        report = VerifyReport(p, "weights")
        report.findings.append(_weights(p))
        return report
    report = VerifyReport(p, "checkpoint")
    report.findings.append(_checkpoint(p))
    return report


def _is_feature_file(p: Path) -> bool:
    from safetensors import safe_open

    from p3d.representation.store import FORMAT

    try:
        with safe_open(str(p), framework="np") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:  # unreadable: let the weights check report it
        return False


def _store(p: Path) -> VerifyReport:
    from p3d.representation.store import verify_features

    check = verify_features(p)
    report = VerifyReport(p, "feature store" if p.is_dir() else "feature file")
    if check.problem:
        report.findings.append(Finding(p, "damaged", check.problem))
    for part in check.parts:
        detail = part.problem or f"{part.videos} videos, {part.bad} bad"
        report.findings.append(Finding(part.path, part.status, detail))
    good = [c for c in check.parts if c.status != "damaged"]
    report.notes.append(
        f"{sum(c.videos for c in good)} videos and {sum(c.bad for c in good)} bad-video records in readable parts; "
        f"{check.duplicates} duplicate video id(s)"
    )
    if p.is_dir():
        for lock in sorted(p.glob(".p3d-lock*")):
            holder = lock_holder(lock)
            if holder is not None:
                report.notes.append(
                    f"being written now by pid {holder.get('pid')} on host {holder.get('host')} ({lock.name})"
                )
    return report


def _checkpoint(p: Path) -> Finding:
    from p3d.engine.checkpoint import load_checkpoint, verify_checkpoint

    try:
        status = verify_checkpoint(p)
    except ValueError as e:
        return Finding(p, "damaged", str(e))
    state = load_checkpoint(p)
    return Finding(p, status, f"iteration {state.get('iteration')}")


def _weights(p: Path) -> Finding:
    from p3d.models.pretrained import sidecar
    from p3d.models.weights import read_state_dict

    side = sidecar(p)
    want = None
    if side.is_file():
        try:
            want = json.loads(side.read_text()).get("sha256")
        except (json.JSONDecodeError, OSError) as e:
            return Finding(p, "damaged", f"{side}: unreadable sidecar ({e})")
    if want and sha256_file(p) != want:
        return Finding(p, "damaged", f"SHA-256 differs from the one recorded in {side.name} when it was written")
    try:
        n = len(read_state_dict(p))
    except (ValueError, OSError) as e:
        return Finding(p, "damaged", str(e))
    return Finding(p, "intact" if want else "unverified", f"{n} tensors" + ("" if want else ", no sidecar checksum"))


def _run(p: Path) -> VerifyReport:
    from p3d.engine.checkpoint import list_checkpoints

    report = VerifyReport(p, "run folder")
    for _, c in list_checkpoints(p / "checkpoints"):
        report.findings.append(_checkpoint(c))
    if (p / "model.safetensors").is_file():
        report.findings.append(_weights(p / "model.safetensors"))
    config = p / "config.yaml"
    if config.is_file():
        import yaml

        from p3d.engine.config import TrainConfig

        try:
            TrainConfig.from_dict(yaml.safe_load(config.read_text()), str(config))
            report.findings.append(Finding(config, "unverified", "a valid configuration"))
        except (ValueError, yaml.YAMLError) as e:
            report.findings.append(Finding(config, "damaged", str(e).splitlines()[0]))
    skipped = p / "skipped.json"
    if skipped.is_file():
        try:
            report.notes.append(f"{json.loads(skipped.read_text())['count']} unreadable training video(s) skipped")
        except (ValueError, KeyError, TypeError) as e:
            report.findings.append(Finding(skipped, "damaged", f"unreadable ({e})"))
    holder = lock_holder(p / ".p3d-lock")
    if holder is not None:
        report.notes.append(f"being trained now by pid {holder.get('pid')} on host {holder.get('host')}")
    if not report.findings:
        report.notes.append("nothing to check yet (no checkpoint, weights or configuration)")
    return report
