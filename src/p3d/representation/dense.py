"""Dense features of long, untrimmed videos: a descriptor for every window along each video, with its time.

P3D's authors fed such sequences to their ActivityNet 2017 temporal proposal and dense captioning systems; the
same stream gives per-window class scores for timelines (``p3d predict --timeline``) and temporal localisation
(``p3d localize``).  Where the windows lie and how they are timed (frame timestamps, so exact with a variable frame
rate; the last window's policy; videos shorter than a window) is :mod:`p3d.data.dense`.

Pipeline: :class:`p3d.data.dense.DenseWindowsDataset` decodes each video once in DataLoader workers and hands out
chunks of uint8 windows; :func:`p3d.engine.inference.iter_video_outputs` runs the model on full batches of windows
taken across chunk and video boundaries; a video's sequence is complete when its last window is done, and
:func:`extract_dense_features` then writes it to the feature store (the clip rows of
:mod:`p3d.representation.store`, with ``clip_times``; the video row is the mean over the windows).

* **Memory** is bounded whatever the videos' lengths: the pixels of at most ``batch_size + chunk`` windows in the
  main process (plus two chunks per worker in flight), and the features of the videos in progress, ``W x D``
  float32 per layer (pool5 of an hour at 25 fps, stride 16: 5,625 x 2048 x 4 B = 46 MB) until their last window.
* **Resumable** per video: a kill loses the videos not yet in a written part (``flush_every`` videos or
  ``flush_windows`` windows per part), a partly done long video included; the next run recomputes them.
* **Reproducible**: every forward pass has exactly ``batch_size`` rows (the last batch of a run is padded with
  zeros), so a window's features do not depend on which windows share its batch, and a resumed run writes the same
  bytes as an uninterrupted one (same machine, same thread count).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from p3d.data.datasets import Sample, SampleList, video_ids
from p3d.data.dense import DEFAULT_CHUNK, DEFAULT_STRIDE, LAST_WINDOW_POLICIES, DenseWindowsDataset, check_stride
from p3d.data.loader import build_loader
from p3d.data.transforms import to_model_input
from p3d.engine.inference import for_inference, iter_video_outputs
from p3d.representation.extract import (
    MAP_POOLING,
    ExtractStats,
    _check_layers,
    _record_missing,
    reduce_layer,
)
from p3d.representation.store import FeatureSet, FeatureWriter
from p3d.spec import InputSpec

log = logging.getLogger(__name__)

DEFAULT_FLUSH_WINDOWS = 8192  # windows per written part (pool5: 64 MB), whatever the number of videos


def dense_meta(spec: InputSpec, stride: int = DEFAULT_STRIDE, last: str = "pad") -> dict[str, Any]:
    """The window layout recorded in a dense store's ``meta["dense"]`` (:mod:`p3d.data.dense`)."""
    check_stride(stride)
    if last not in LAST_WINDOW_POLICIES:
        raise ValueError(f"last window policy must be one of {LAST_WINDOW_POLICIES}, got {last!r}")
    return {
        "stride": int(stride),
        "window": spec.clip_len * spec.frame_stride,
        "clip_len": spec.clip_len,
        "frame_stride": spec.frame_stride,
        "last": last,
    }


class DenseVideo(NamedTuple):
    """One video's result: ``outputs`` ``{layer: (W, D) float32}`` and ``times`` ``(W, 2)`` seconds, or ``None``
    and the reason in ``error``.  ``index`` is its position in the samples given."""

    index: int
    outputs: dict[str, np.ndarray] | None
    times: np.ndarray | None
    error: str | None


@dataclass
class _Sequence:
    """A video whose windows are being computed."""

    total: int
    times: np.ndarray
    outputs: dict[str, np.ndarray] | None = None
    filled: int = 0

    def put(self, first: int, outs: dict[str, np.ndarray]) -> None:
        if self.outputs is None:
            self.outputs = {k: np.zeros((self.total, *a.shape[1:]), np.float32) for k, a in outs.items()}
        for k, a in outs.items():
            self.outputs[k][first : first + len(a)] = a
        self.filled += len(next(iter(outs.values())))


def _full_batches(forward: Callable[[Tensor], dict[str, Tensor]], batch_size: int) -> Callable[[Tensor], dict]:
    """``forward`` on exactly ``batch_size`` rows: a short batch is padded with zeros (in the input's memory layout)
    and the outputs cut back, so that every window goes through the same kernels whatever shares its batch."""

    def run(x: Tensor) -> dict[str, Tensor]:
        n = len(x)
        if n < batch_size:
            last = x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)
            x = torch.cat([x, x.new_zeros((batch_size - n, *x.shape[1:]))])
            if last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
        return {k: v[:n] for k, v in forward(x).items()}

    return run


def iter_dense_features(
    model: nn.Module,
    samples: SampleList | Sequence[Sample],
    *,
    layers: Sequence[str] = ("pool5",),
    stride: int = DEFAULT_STRIDE,
    last: str = "pad",
    flip: bool = False,
    batch_size: int = 32,
    map_pooling: str = "max",
    chunk: int = DEFAULT_CHUNK,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
    on_batch: Callable[[int, float], None] | None = None,
) -> Iterator[DenseVideo]:
    """The window features of every sample, as each video completes (not in input order): :class:`DenseVideo`.

    ``layers`` are ``model.forward_layers`` names (conv maps reduced by ``map_pooling``, see
    :func:`p3d.representation.extract.reduce_layer`); ``prob`` gives per-window class scores.  ``flip`` averages
    each window with its horizontal mirror.  ``batch_size`` windows per forward pass, taken across videos;
    ``chunk`` windows per item from the decoding workers.  See the module docstring for memory and reproducibility.
    """
    if map_pooling not in MAP_POOLING:
        raise ValueError(f"map_pooling must be one of {MAP_POOLING}, got {map_pooling!r}")
    check_stride(batch_size, "batch_size")
    items = list(samples.samples if isinstance(samples, SampleList) else samples)
    device = torch.device(device)
    net = for_inference(model, device)
    names = list(layers)
    _check_layers(net, names, map_pooling, device)
    spec: InputSpec = net.input_spec
    ds = DenseWindowsDataset(items, spec, stride=stride, last=last, chunk=chunk, flip=flip)
    loader = build_loader(
        ds, None, train=False, num_workers=num_workers, device=device, prefetch_factor=2, persistent_workers=False
    )

    def forward(x: Tensor) -> dict[str, Tensor]:
        return {k: reduce_layer(v, map_pooling) for k, v in net.forward_layers(x, names).items()}

    running: dict[int, _Sequence] = {}
    failed: set[int] = set()

    def chunks() -> Iterator[tuple[tuple[int, int], Tensor | None, str | None]]:
        for it in loader:
            v = int(it["video_index"])
            if not it["valid"]:
                yield (v, -1), None, it["error"]
                continue
            if v not in running:
                running[v] = _Sequence(int(it["total"]), np.zeros((int(it["total"]), 2)))
            first = int(it["first"])
            times = np.asarray(it["times"], dtype=np.float64)
            running[v].times[first : first + len(times)] = times
            yield (v, first), it["windows"], None

    for (v, first), outs, error in iter_video_outputs(
        chunks(),
        _full_batches(forward, batch_size),
        batch_size=batch_size,
        device=device,
        amp=amp,
        prepare=partial(to_model_input, spec=spec),
        on_batch=on_batch,
    ):
        if v in failed:
            continue
        if outs is None:  # unreadable, possibly after some of its chunks: those are dropped as they come out
            failed.add(v)
            running.pop(v, None)
            yield DenseVideo(v, None, None, error or "unreadable video")
            continue
        if flip:
            half = len(next(iter(outs.values()))) // 2
            outs = {k: 0.5 * (a[:half] + a[half:]) for k, a in outs.items()}
        seq = running[v]
        seq.put(first, outs)
        if seq.filled == seq.total:
            del running[v]
            yield DenseVideo(v, seq.outputs, seq.times, None)


def extract_dense_features(
    model: nn.Module,
    samples: SampleList | Sequence[Sample],
    out: str | os.PathLike[str],
    meta: dict[str, Any],
    *,
    layers: Sequence[str] = ("pool5",),
    stride: int = DEFAULT_STRIDE,
    last: str = "pad",
    flip: bool = False,
    batch_size: int = 32,
    map_pooling: str = "max",
    chunk: int = DEFAULT_CHUNK,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    flush_every: int = 64,
    flush_windows: int = DEFAULT_FLUSH_WINDOWS,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> ExtractStats:
    """Write the window sequences of ``samples`` to the feature store ``out`` (a dense store, see
    :mod:`p3d.representation.store`); ``meta`` from :func:`p3d.representation.extract.build_meta` with
    ``dense=dense_meta(spec, stride, last)``.

    Resumable, sharded (``rank``/``world_size``: every ``world_size``-th video of the full list) and tolerant of bad
    videos exactly like :func:`p3d.representation.extract.extract_features`; ``stats.clips`` counts windows.
    """
    want = dense_meta(model.input_spec, stride, last)
    if meta.get("dense") != want:
        raise ValueError(f"meta['dense'] must describe the window layout {want}, got {meta.get('dense')!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    items = list(samples.samples if isinstance(samples, SampleList) else samples)
    ids = video_ids(items)
    stats = ExtractStats()
    t0 = time.perf_counter()
    writer = FeatureWriter(out, meta, rank=rank, flush_every=flush_every, flush_clips=flush_windows)
    shard = range(rank, len(items), world_size)
    mine = [i for i in shard if ids[i] not in writer.done]
    stats.skipped = len(shard) - len(mine)
    if rank == 0:
        _record_missing(writer, getattr(samples, "missing", []), stats)
    from tqdm import tqdm

    bar = tqdm(total=len(mine), unit="video", disable=not progress, dynamic_ncols=True, desc=f"extract r{rank}")

    def counted(n: int, seconds: float) -> None:
        stats.clips += n // 2 if flip else n
        stats.forward_seconds += seconds
        if on_batch is not None:
            on_batch(n)

    try:
        for slot, feats, times, error in iter_dense_features(
            model,
            [items[i] for i in mine],
            layers=layers,
            stride=stride,
            last=last,
            flip=flip,
            batch_size=batch_size,
            map_pooling=map_pooling,
            chunk=chunk,
            num_workers=num_workers,
            device=device,
            amp=amp,
            on_batch=counted,
        ):
            sample, vid = items[mine[slot]], ids[mine[slot]]
            if feats is None:
                writer.add_bad(vid, error)
                stats.bad[vid] = error
                log.warning("skipped %s: %s", sample.path, error)
            else:
                video = {k: v.mean(axis=0) for k, v in feats.items()}
                writer.add(vid, video, label=sample.labels, clip=feats, clip_times=times)
                stats.written += 1
            bar.update(1)
            bar.set_postfix(bad=len(stats.bad), refresh=False)
    finally:
        writer.close()
        bar.close()
        stats.seconds = time.perf_counter() - t0
    return stats


SCORE_LAYERS = ("prob", "logits")


def store_window_scores(
    fs: FeatureSet, layer: str | None = None
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Per-window class probabilities of every video of a dense store: ``({video id: (scores (W, K), times (W, 2))},
    class names)``.  ``layer``: ``prob`` (stored softmax; the default when present) or ``logits`` (softmax taken
    here) -- the model's own classifier on each window.  The columns are the model's classes (its config's
    ``class_names``, else the store's when their number matches)."""
    if not fs.is_dense:
        raise ValueError(f"{fs.source}: not a dense store (extract with p3d extract --dense)")
    if layer is None:
        layer = next((n for n in SCORE_LAYERS if n in fs.clip), None)
        if layer is None:
            raise ValueError(
                f"{fs.source}: no class scores stored (layers {list(fs.clip)}); extract with --layers ... prob"
            )
    if layer not in SCORE_LAYERS:
        raise ValueError(f"--layer must be one of {SCORE_LAYERS} (class scores), got {layer!r}")
    if layer not in fs.clip:
        raise ValueError(f"{fs.source}: no window features of layer {layer!r}; it holds {list(fs.clip)}")
    k = fs.clip[layer].shape[1]
    names = None
    for cand in ((fs.meta.get("model_cfg") or {}).get("class_names"), fs.meta.get("class_names")):
        if cand and len(cand) == k:
            names = [str(c) for c in cand]
            break
    if names is None:
        raise ValueError(f"{fs.source}: the store does not name the {k} classes of its {layer!r} columns")
    out = {}
    for vid, seq, times in fs.sequences(layer):
        scores = seq.astype(np.float64)
        if layer == "logits":
            scores = torch.from_numpy(scores).softmax(dim=1).numpy()
        out[vid] = (scores, times)
    return out, names
