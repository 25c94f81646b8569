"""Training checkpoints: atomic writes, the full training state, finding the last good one.

A checkpoint is written atomically (:func:`p3d.fileio.atomic_write_bytes`): a crash or a kill at any moment leaves
either the previous file or the new one, never a half-written one.  It carries the model's
:class:`~p3d.models.config.PretrainedCfg`, so :func:`p3d.models.load_model` (and every command) rebuilds the model
from the checkpoint or its run folder alone.

A checkpoint holds everything a resumed run needs to continue exactly as if it had not stopped: the model,
optimizer, learning-rate scheduler and gradient-scaler states, the iteration, the data position (epoch and
batches consumed in it) and the random states of torch, NumPy and Python.  All of it is tensors and plain
Python values, so it is read with ``torch.load(weights_only=True)``: loading a checkpoint executes nothing.

Integrity: the file records ``sha256``, the :func:`p3d.fileio.tensor_digest` of everything else in it (every
tensor's dtype, shape and bytes, every value); :func:`load_checkpoint` recomputes it, so a flipped byte anywhere
is an :class:`~p3d.errors.IntegrityError` naming the file (PyTorch's zip reader does not check its CRCs), never a
silently changed weight.  Checkpoints written before the checksum load unverified.

Files are ``<run>/checkpoints/ckpt-<iteration>.pt``; the newest ``keep`` are kept.  :func:`latest_checkpoint`
returns the newest one that loads and verifies, skipping (and reporting) any that do not.
"""

from __future__ import annotations

import io
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p3d.errors import IntegrityError
from p3d.fileio import atomic_write_bytes, tensor_digest
from p3d.models.resolve import CHECKPOINT_CHECKSUM_KEY, TRAIN_CHECKPOINT_FORMAT, run_checkpoints, state_checksum

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "prune_checkpoints",
    "rng_state",
    "set_rng_state",
    "is_train_checkpoint",
    "verify_checkpoint",
]

log = logging.getLogger(__name__)

FORMAT = TRAIN_CHECKPOINT_FORMAT
VERSION = 1


def rng_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), NumPy's global generator and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, g = state["python"]
    random.setstate((v, tuple(internal), g))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Serialise ``state`` (tensors and plain values) with its checksum to ``path`` atomically; returns the path."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload.pop(CHECKPOINT_CHECKSUM_KEY, None)
    payload[CHECKPOINT_CHECKSUM_KEY] = tensor_digest(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def _read(p: Path) -> dict[str, Any]:
    """The raw content of a checkpoint file (its checksum still in it), format and version checked."""
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling refused
        first = (str(e).strip().splitlines() or [""])[0]
        raise IntegrityError(
            f"{p}: not a readable checkpoint, damaged or not a torch file ({type(e).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{p}: not a `p3d train` checkpoint (no {FORMAT!r} marker)")
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{p}: checkpoint version {state['version']} is newer than this p3d supports ({VERSION})")
    return state


def _verify(p: Path, state: dict[str, Any]) -> bool:
    """Remove the recorded checksum from ``state`` and check it; False when none was recorded."""
    recorded = state.pop(CHECKPOINT_CHECKSUM_KEY, None)
    if recorded is not None and state_checksum(state, p) != recorded:
        raise IntegrityError(
            f"{p}: damaged: its content differs from the SHA-256 recorded when it was written (flipped bits, an "
            f"edit or a bad copy); resume from an earlier checkpoint"
        )
    return recorded is not None


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum; errors name the file and the
    problem (:class:`~p3d.errors.IntegrityError` when the content differs from what was written)."""
    p = Path(path)
    state = _read(p)
    _verify(p, state)
    if torch.device(map_location).type != "cpu":
        state = _to_device(state, torch.device(map_location))
    return state


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def verify_checkpoint(path: str | os.PathLike[str]) -> str:
    """``"intact"`` (the checksum matches) or ``"unverified"`` (written before checksums, but it loads); raises
    ``ValueError``/:class:`~p3d.errors.IntegrityError` naming the file when it is damaged."""
    p = Path(path)
    return "intact" if _verify(p, _read(p)) else "unverified"


def is_train_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a ``p3d train`` checkpoint (cheap check of the file name and zip layout)."""
    p = Path(path)
    if not p.is_file() or p.suffix not in (".pt", ".pth"):
        return False
    try:
        load_checkpoint(p)
    except ValueError:
        return False
    return True


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the ``ckpt-*.pt`` files in ``directory``, oldest first."""
    return run_checkpoints(directory)


def latest_checkpoint(directory: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``directory`` that loads, with its state; ``None`` when there is none."""
    for _, p in reversed(list_checkpoints(directory)):
        try:
            return p, load_checkpoint(p)
        except ValueError as e:
            log.warning("skipping checkpoint: %s", e)
    return None


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def checkpoint_path(directory: str | os.PathLike[str], iteration: int) -> Path:
    return Path(directory) / f"ckpt-{iteration:08d}.pt"
