"""Training checkpoints: atomic writes, the full training state, finding the last good one.

A checkpoint is written atomically (:func:`p3d.fileio.atomic_write_bytes`): a crash or a kill at any moment leaves
either the previous file or the new one, never a half-written one.  It carries the model's
:class:`~p3d.models.config.PretrainedCfg`, so :func:`p3d.models.load_model` (and every command) rebuilds the model
from the checkpoint or its run folder alone.

A checkpoint holds everything a resumed run needs to continue exactly as if it had not stopped: the model,
optimizer, learning-rate scheduler and gradient-scaler states, the iteration, the data position (epoch and
batches consumed in it) and the random states of torch, NumPy and Python.  All of it is tensors and plain
Python values, so it is read with ``torch.load(weights_only=True)``: loading a checkpoint executes nothing.

Files are ``<run>/checkpoints/ckpt-<iteration>.pt``; the newest ``keep`` are kept.  :func:`latest_checkpoint`
returns the newest one that loads, skipping (and reporting) any that do not.
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

from p3d.fileio import atomic_write_bytes
from p3d.models.resolve import TRAIN_CHECKPOINT_FORMAT, run_checkpoints

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
    """Serialise ``state`` (tensors and plain values) to ``path`` atomically; returns the path."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; errors name the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, unpickling refused
        raise ValueError(f"{p}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{p}: not a `p3d train` checkpoint (no {FORMAT!r} marker)")
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{p}: checkpoint version {state['version']} is newer than this p3d supports ({VERSION})")
    return state


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
            log.warning("skipping unreadable checkpoint: %s", e)
    return None


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for _, p in list_checkpoints(directory)[:-keep]:
        p.unlink(missing_ok=True)


def checkpoint_path(directory: str | os.PathLike[str], iteration: int) -> Path:
    return Path(directory) / f"ckpt-{iteration:08d}.pt"
