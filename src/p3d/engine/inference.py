"""Clip-batched inference over many videos: the stream ``p3d test``, ``p3d predict`` and ``p3d extract`` share.

Every video gives several clips; :func:`iter_video_outputs` keeps a flat FIFO of clips from many videos and runs the
model on full batches taken across video boundaries, so the model never sees the ragged tail of a video as a small
batch and memory stays bounded whatever the clips per video.  :func:`autocast` is the one mixed-precision context
of training and inference.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["autocast", "for_inference", "iter_video_outputs"]


def for_inference(model: nn.Module, device: torch.device | str = "cpu", fuse: bool = True) -> nn.Module:
    """``model`` on ``device`` in eval mode, ready for inference: a P3D ResNet gets its BatchNorms folded into the
    convolutions once (:func:`p3d.models.fuse_for_inference`, a copy; the original is untouched) instead of on every
    call.  Other models are returned as they are."""
    from p3d.models import P3DResNet, fuse_for_inference

    model = model.to(device).eval()
    if fuse and isinstance(model, P3DResNet):
        return fuse_for_inference(model)
    return model


class _ClipStream:
    """Flat FIFO of clips from many videos; ``take(n)`` returns up to n clips and their (video, clip) owners."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, Tensor, int]] = deque()  # (video slot, clips, first clip not yet taken)
        self.size = 0

    def push(self, slot: int, clips: Tensor) -> None:
        self.chunks.append((slot, clips, 0))
        self.size += len(clips)

    def take(self, n: int) -> tuple[Tensor, np.ndarray, np.ndarray]:
        parts, owners, rows = [], [], []
        while n > 0 and self.chunks:
            slot, clips, start = self.chunks[0]
            k = min(n, len(clips) - start)
            parts.append(clips[start : start + k])
            owners.append(np.full(k, slot))
            rows.append(np.arange(start, start + k))
            n -= k
            self.size -= k
            if start + k == len(clips):
                self.chunks.popleft()
            else:
                self.chunks[0] = (slot, clips, start + k)
        return torch.cat(parts), np.concatenate(owners), np.concatenate(rows)


def autocast(device: torch.device | str, amp: bool | str | None):
    """Mixed precision of a forward (and backward) pass: ``False``/``None``/``"none"`` off, ``True``/``"auto"`` the
    device's default (bfloat16 on CPU, float16 on CUDA), ``"bf16"`` / ``"fp16"`` that dtype."""
    device = torch.device(device)
    if amp in (False, None, "none"):
        return contextlib.nullcontext()
    if amp in (True, "auto"):
        return torch.autocast(device.type)
    if amp not in ("bf16", "fp16"):
        raise ValueError(f"amp must be one of none, auto, bf16, fp16, got {amp!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def iter_video_outputs(
    videos: Iterable[tuple[Any, Tensor | None, str | None]],
    forward: Callable[[Tensor], dict[str, Tensor]],
    *,
    batch_size: int,
    device: torch.device | str = "cpu",
    amp: bool | str = False,
    prepare: Callable[[Tensor], Tensor] | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> Iterator[tuple[Any, dict[str, np.ndarray] | None, str | None]]:
    """Run ``forward`` over the clips of many videos in full batches taken across video boundaries.

    ``videos`` yields ``(key, clips, error)``: ``clips`` ``(N, ...)`` of one video, or ``None`` with the reason
    ``error`` when it could not be read.  Clips are copied to ``device`` (on CUDA as each video arrives, non-blocking:
    pinned host memory overlaps the copy with the running batch), each batch is turned into model input there by
    ``prepare`` (e.g.
    :func:`p3d.data.transforms.to_model_input` for uint8 frames), and ``forward`` maps it ``(B, C, T, H, W)`` to
    named ``(B, ...)`` outputs.  Yields ``(key, {name: (N, ...) float32 per-clip outputs}, None)`` once all of a
    video's clips are done, or ``(key, None, error)`` for an unreadable one (as soon as it is seen, so not in input
    order).  At most ``batch_size`` clips go through the model at once and one video's clips wait beyond the batch,
    so memory is bounded whatever the clips per video.  ``on_batch(clips, forward_seconds)`` after every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    stream = _ClipStream()
    keys: dict[int, Any] = {}  # stream slot -> caller's key (a key may repeat, e.g. a padded shard)
    size: dict[int, int] = {}
    filled: dict[int, int] = {}
    pending: dict[int, dict[str, np.ndarray]] = {}
    done: list[tuple[Any, dict[str, np.ndarray] | None, str | None]] = []

    def run_batch() -> None:
        x, owners, rows = stream.take(batch_size)
        t = time.perf_counter()
        with torch.inference_mode():
            x = x.to(device, non_blocking=True)
            if prepare is not None:
                x = prepare(x)
            with autocast(device, amp):
                outs = forward(x)
        got = {k: v.float().cpu().numpy() for k, v in outs.items()}
        if on_batch is not None:
            on_batch(len(owners), time.perf_counter() - t)
        for slot in np.unique(owners).tolist():
            sel = owners == slot
            if slot not in pending:
                pending[slot] = {k: np.zeros((size[slot], *a.shape[1:]), np.float32) for k, a in got.items()}
            buf = pending[slot]
            for k, a in got.items():
                buf[k][rows[sel]] = a[sel]
            filled[slot] += int(sel.sum())
            if filled[slot] == size[slot]:
                done.append((keys.pop(slot), pending.pop(slot), None))
                del size[slot], filled[slot]

    for slot, (key, clips, error) in enumerate(videos):
        if clips is None:
            yield key, None, error or "unreadable video"
            continue
        keys[slot], size[slot], filled[slot] = key, len(clips), 0
        if device.type == "cuda":
            # copy each video's clips as they arrive: from the loader's pinned memory this overlaps the running
            # batch, and the batch is then joined on the device (a host-side join would land in pageable memory)
            clips = clips.to(device, non_blocking=True)
        stream.push(slot, clips)
        while stream.size >= batch_size:
            run_batch()
            yield from done
            done.clear()
    while stream.size:
        run_batch()
        yield from done
        done.clear()
