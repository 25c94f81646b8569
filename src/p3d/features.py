"""Representation extraction (paper, Sec. 5): P3D ResNet (or any registry model) as a generic video descriptor.

Every video gives ``num_clips`` test clips (20 by default, uniformly spread, centre crop; optionally averaged
with their horizontal flip).  The clip descriptors of each requested layer are averaged into the
video-level descriptor the paper feeds to its linear models.  Layers: ``pool5`` (2048-d for the ResNet-50
and deeper trunks), ``res5c`` and ``res4_last`` (the last res4 unit, ``res4b35`` in P3D-199; conv maps
reduced over ``(T, H, W)``, see ``map_pooling``), ``logits`` and ``prob``.

Throughput: decoding runs in DataLoader workers, one *video* per item; the main process keeps a flat stream
of clips (video index, clip index) and runs the model on full batches of ``batch_size`` clips taken across
video boundaries, so the model never sees the ragged tail of a video as a small batch.  A video's
descriptor is written once all its clips are done.  Results go through :class:`p3d.features_io.FeatureWriter`
(atomic parts, resumable, one part series per rank).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from p3d.data.datasets import Sample, SampleList, VideoClipsDataset
from p3d.data.loader import default_num_workers
from p3d.data.video import VideoReader, list_videos
from p3d.evaluation.lists import normalize_id
from p3d.features_io import FeatureWriter
from p3d.malloc import release_memory
from p3d.spec import InputSpec

log = logging.getLogger(__name__)

DEFAULT_LAYERS = ("pool5",)
MAP_POOLING = ("max", "avg")


# --------------------------------------------------------------------------------------------- inputs


def samples_from_path(path: str | os.PathLike[str]) -> SampleList:
    """A folder or a list file as samples.

    * a folder with class sub-folders holding videos: labelled by folder (``p3d.data.parse_folder``);
    * any other folder: every video under it, unlabelled;
    * a ``.csv``/``.tsv`` manifest: ``p3d.data.parse_manifest``;
    * any other file: one video per line, ``<path> [<label>]``, relative paths from the file's folder;
      integer labels are class numbers, other tokens class names (sorted into numbers).
    """
    from p3d.data.datasets import parse_folder, parse_manifest

    p = Path(path)
    if p.is_dir():
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        loose = [v for v in list_videos(p) if v.parent == p]
        if subdirs and not loose and all(list_videos(d) for d in subdirs):
            return parse_folder(p)
        videos = list_videos(p)
        if not videos:
            raise ValueError(f"{p}: no video files found")
        return SampleList([Sample(str(v), (), v.stem) for v in videos], [])
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such folder or list file")
    if p.suffix.lower() in (".csv", ".tsv"):
        return parse_manifest(p)
    rows = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{p}: line {n}: expected '<video path> [<label>]'")
        v = Path(parts[0])
        rows.append((v if v.is_absolute() else p.parent / v, parts[1] if len(parts) == 2 else None))
    if not rows:
        raise ValueError(f"{p}: empty video list")
    tokens = sorted({t for _, t in rows if t is not None})
    numeric = all(t.lstrip("-").isdigit() for t in tokens)
    names = [] if numeric else tokens
    samples = []
    for v, t in rows:
        lab = () if t is None else ((int(t),) if numeric else (names.index(t),))
        samples.append(Sample(str(v), lab, v.stem))
    return SampleList(samples, names)


def video_ids(samples: Sequence[Sample]) -> list[str]:
    """Feature ids of ``samples``: path relative to the samples' common folder, without extension.

    UCF101 samples get ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01``, exactly what its split lists say (see
    :func:`p3d.evaluation.lists.normalize_id`).  Segments of one file (ActivityNet trimmed) or paths that do
    not give unique ids use the dataset's ``video_id`` instead.
    """
    if not samples:
        return []
    segments = any(s.start is not None or s.end is not None for s in samples)
    if not segments:
        paths = [os.path.abspath(s.path) for s in samples]
        base = os.path.commonpath([os.path.dirname(q) for q in paths])
        ids = [normalize_id(os.path.relpath(q, base)) for q in paths]
        if len(set(ids)) == len(ids):
            return ids
    ids = [s.video_id for s in samples]
    if len(set(ids)) != len(ids):
        from collections import Counter

        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"video ids are not unique (e.g. {dup!r}); give a manifest with a video_id column")
    return ids


# ------------------------------------------------------------------------------------------- dataset


class _VideoClips(VideoClipsDataset):
    """All test clips of one video per item, with the reason when it cannot be read (never raises).

    Item: ``{"index": i, "clips": (num_clips, C, T, H, W) float32 or None, "error": str or None}``; with
    ``flip`` the clips are followed by their horizontal mirrors (``2 * num_clips`` rows).
    """

    def __init__(self, samples: Sequence[Sample], spec: InputSpec, num_clips: int, flip: bool) -> None:
        super().__init__(list(samples), spec, num_clips=num_clips, flat=False)
        self.flip = flip

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        s = self.samples[i]
        t = self.spec.clip_len
        try:
            if not os.path.exists(s.path):
                raise FileNotFoundError("file not found")
            with VideoReader(s.path, threads=self.threads) as r:
                idx = self.clip_indices(r, s)
                frames = r.get_frames(idx.reshape(-1), size=self.transform.decode_size)
            frames = frames.reshape(self.num_clips, t, *frames.shape[1:])
            clips = torch.stack([self.transform(f) for f in frames])
            if self.flip:
                clips = torch.cat([clips, clips.flip(-1)])
            return {"index": i, "clips": clips, "error": None}
        except Exception as e:  # noqa: BLE001 - any failure of one video is listed, never fatal to the run
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            return {"index": i, "clips": None, "error": str(reason)}


# ----------------------------------------------------------------------------------------- the engine


def reduce_layer(x: Tensor, map_pooling: str = "max") -> Tensor:
    """``(N, D)`` as is; a conv map ``(N, C, T, H, W)`` pooled over ``(T, H, W)`` to ``(N, C)``.

    ``avg`` of ``res5c`` equals ``pool5`` (the deploy file's pool5 is a global average of res5c), so the
    default for maps is ``max``: a different, complementary descriptor.
    """
    if x.dim() == 2:
        return x
    if x.dim() != 5:
        raise ValueError(f"expected a (N, D) vector or (N, C, T, H, W) map, got {tuple(x.shape)}")
    if map_pooling == "avg":
        return x.mean(dim=(2, 3, 4))
    if map_pooling == "max":
        return x.amax(dim=(2, 3, 4))
    raise ValueError(f"map_pooling must be one of {MAP_POOLING}, got {map_pooling!r}")


@dataclass
class ExtractStats:
    """What a run did: videos written, bad videos (id -> reason), skipped (already done), clips, seconds."""

    written: int = 0
    bad: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    clips: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0

    @property
    def videos_per_second(self) -> float:
        return (self.written + len(self.bad)) / self.seconds if self.seconds > 0 else 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_meta(
    model: nn.Module,
    model_name: str,
    layers: Sequence[str],
    *,
    num_clips: int,
    flip: bool,
    map_pooling: str,
    class_names: Sequence[str] | None,
    weights: str | None = None,
    clip_level: bool = False,
    dataset: str = "",
) -> dict[str, Any]:
    """Provenance stored with the features (``meta.json`` and every part's header)."""
    from p3d import __version__

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return {
        "model": model_name,
        "model_options": cfg.get("options", {}),
        "weights": None if weights is None else {"path": str(weights), "sha256": _file_digest(weights)},
        "layers": list(layers),
        "input_spec": model.input_spec.to_dict(),
        "num_clips": int(num_clips),
        "flip": bool(flip),
        "map_pooling": map_pooling,
        "crop": "centre",
        "clip_level": bool(clip_level),
        "class_names": list(class_names) if class_names else None,
        "dataset": dataset,
        "p3d_version": __version__,
    }


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


def autocast(device: torch.device | str, amp: bool | str):
    """Mixed precision of a forward pass: ``False``/``"none"`` off, ``True``/``"auto"`` the device's default
    (bfloat16 on CPU, float16 on CUDA), ``"bf16"`` / ``"fp16"`` that dtype."""
    device = torch.device(device)
    if amp in (False, None, "none"):
        return torch.autocast(device.type, enabled=False)
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
    on_batch: Callable[[int, float], None] | None = None,
) -> Iterator[tuple[Any, dict[str, np.ndarray] | None, str | None]]:
    """Run ``forward`` over the clips of many videos in full batches taken across video boundaries.

    ``videos`` yields ``(key, clips, error)``: ``clips`` ``(N, C, T, H, W)`` of one video, or ``None`` with the
    reason ``error`` when it could not be read.  ``forward`` maps a batch ``(B, C, T, H, W)`` to named ``(B, ...)``
    outputs.  Yields ``(key, {name: (N, ...) float32 per-clip outputs}, None)`` once all of a video's clips are
    done, or ``(key, None, error)`` for an unreadable one (as soon as it is seen, so not in input order).  At
    most ``batch_size`` clips go through the model at once and one video's clips wait beyond the batch, so
    memory is bounded whatever the clips per video.  ``on_batch(clips, forward_seconds)`` after every batch.
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
        with torch.inference_mode(), autocast(device, amp):
            outs = forward(x.to(device, non_blocking=True))
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
        stream.push(slot, clips)
        while stream.size >= batch_size:
            run_batch()
            yield from done
            done.clear()
    while stream.size:
        run_batch()
        yield from done
        done.clear()


def extract_features(
    model: nn.Module,
    samples: SampleList | Sequence[Sample],
    out: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    layers: Sequence[str] = DEFAULT_LAYERS,
    num_clips: int = 20,
    flip: bool = False,
    batch_size: int = 32,
    map_pooling: str = "max",
    clip_level: bool = False,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    flush_every: int = 256,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractStats:
    """Extract video descriptors of ``samples`` into the feature store ``out``; see the module docstring.

    Args:
        model: a registry model with ``forward_layers(x, names)`` and ``input_spec``; put in eval mode here.
        samples: the videos (any dataset format of :mod:`p3d.data`); ids from :func:`video_ids`.
        layers: names accepted by ``model.forward_layers`` (e.g. pool5, res5c, res4_last, logits, prob).
        batch_size: clips per forward pass (flipped clips count as clips).
        rank, world_size: this process's shard is every ``world_size``-th video from ``rank`` (of the
            full list; those already in the store, written by any rank or an earlier run, are skipped).
    Returns:
        :class:`ExtractStats`.  Videos already in the store (any rank) are skipped; bad videos are recorded in
        the store with their reason and counted, never raised.
    """
    if map_pooling not in MAP_POOLING:
        raise ValueError(f"map_pooling must be one of {MAP_POOLING}, got {map_pooling!r}")
    if num_clips < 1 or batch_size < 1:
        raise ValueError(f"num_clips and batch_size must be >= 1, got {num_clips}, {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    items = list(samples.samples if isinstance(samples, SampleList) else samples)
    missing = list(samples.missing) if isinstance(samples, SampleList) else []
    ids = video_ids(items)
    spec: InputSpec = model.input_spec
    device = torch.device(device)
    model = model.to(device).eval()
    names = list(layers)
    with torch.inference_mode():  # fail early on a bad layer name, not after decoding the first video
        h, w = spec.size
        probe = torch.zeros(1, spec.channels, spec.clip_len, h, w, device=device)
        for v in model.forward_layers(probe, names).values():
            reduce_layer(v, map_pooling)

    stats = ExtractStats()
    t0 = time.perf_counter()
    writer = FeatureWriter(out, meta, rank=rank, flush_every=flush_every)
    # shard the full, ordered list (not the remaining videos): every rank computes the same assignment even
    # when the ranks start at different times into a partly filled store
    shard = range(rank, len(items), world_size)
    mine = [i for i in shard if ids[i] not in writer.done]
    stats.skipped = len(shard) - len(mine)
    if rank == 0:
        for m in missing:
            mid = normalize_id(Path(m).name)
            if mid not in writer.done:
                writer.add_bad(mid, "file not found (listed by the dataset's annotations)")
                stats.bad[mid] = "file not found"
    ds = _VideoClips([items[i] for i in mine], spec, num_clips, flip)
    if num_workers is None:
        num_workers = default_num_workers(device)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
    from tqdm import tqdm

    bar = tqdm(total=len(mine), unit="video", disable=not progress, dynamic_ncols=True, desc=f"extract r{rank}")

    def forward(x: Tensor) -> dict[str, Tensor]:
        return {k: reduce_layer(v, map_pooling) for k, v in model.forward_layers(x, names).items()}

    def counted(n: int, seconds: float) -> None:
        stats.clips += n
        stats.forward_seconds += seconds
        if on_batch is not None:
            on_batch(n)

    videos = ((item["index"], item["clips"], item["error"]) for item in loader)
    try:
        for slot, feats, error in iter_video_outputs(
            videos, forward, batch_size=batch_size, device=device, amp=amp, on_batch=counted
        ):
            vid = ids[mine[slot]]
            if feats is None:
                writer.add_bad(vid, error)
                stats.bad[vid] = error
                log.warning("skipped %s: %s", items[mine[slot]].path, error)
            else:
                if flip:  # average each clip with its mirror: rows k and k + num_clips
                    feats = {n: 0.5 * (v[:num_clips] + v[num_clips:]) for n, v in feats.items()}
                writer.add(
                    vid,
                    {n: v.mean(axis=0) for n, v in feats.items()},
                    label=items[mine[slot]].labels,  # all labels of a multi-label video
                    clip=feats if clip_level else None,
                )
                stats.written += 1
            bar.update(1)
            bar.set_postfix(bad=len(stats.bad), refresh=False)
    finally:
        writer.close()
        bar.close()
        stats.seconds = time.perf_counter() - t0
        release_memory()
    return stats


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def forward_throughput(
    model: nn.Module,
    spec: InputSpec,
    layers: Sequence[str],
    batch_size: int,
    iters: int = 5,
    device: str | torch.device = "cpu",
    amp: bool = False,
    map_pooling: str = "max",
) -> float:
    """Pure model throughput in clips/s: ``forward_layers`` on a resident random batch (1 warm-up pass)."""
    device = torch.device(device)
    model = model.to(device).eval()
    h, w = spec.size
    x = torch.randn(batch_size, spec.channels, spec.clip_len, h, w, device=device)
    with torch.inference_mode(), autocast(device, amp):
        for i in range(iters + 1):
            if i == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            outs = model.forward_layers(x, list(layers))
            _ = {k: reduce_layer(v, map_pooling).float().cpu() for k, v in outs.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * iters / (time.perf_counter() - t0)
