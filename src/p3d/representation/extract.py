"""Representation extraction (paper, Sec. 5): P3D ResNet (or any registry model) as a generic video descriptor.

Every video gives ``num_clips`` test clips (20 by default, uniformly spread, centre crop; optionally averaged
with their horizontal flip).  The clip descriptors of each requested layer are averaged into the
video-level descriptor the paper feeds to its linear models.  Layers: ``pool5`` (2048-d for the ResNet-50
and deeper trunks), ``res5c`` and ``res4_last`` (the last res4 unit, ``res4b35`` in P3D-199; conv maps
reduced over ``(T, H, W)``, see ``map_pooling``), ``logits`` and ``prob``.

Throughput: decoding runs in DataLoader workers, one *video* per item; the main process keeps a flat stream
of clips (video index, clip index) and runs the model on full batches of ``batch_size`` clips taken across
video boundaries, so the model never sees the ragged tail of a video as a small batch.  A video's
descriptor is written once all its clips are done.  Results go through
:class:`p3d.representation.store.FeatureWriter` (atomic parts, resumable, one part series per rank).  BatchNorm is
folded into the convolutions once before the run (:func:`p3d.models.fuse_for_inference`).

Keeping a GPU busy: on CUDA, without an explicit worker count, the loader is sized from measured rates
(:func:`p3d.data.loader.plan_loader`): a short probe of this model's clips/s and of one worker's decode rate on the
first videos, then ``ceil(model / decode)`` workers (capped by the cores) and a prefetch depth of two model batches.
:class:`ExtractStats` records the plan and how long the main loop waited on the loader.

``local=LocalSpec("res5c", ...)`` also keeps that layer's activations per position and clip as local descriptors
(float16, optionally spatial-pyramid pooled and PCA-reduced), for the encoders of the paper's Sec. 5 (FV, VLAD,
FV-VAE): :mod:`p3d.representation.local` describes them, :func:`fit_local_pca` the one-time PCA.

Stops and failures: SIGTERM, SIGINT and SIGHUP end the run after the video in hand, with the pending chunk written
(:attr:`ExtractStats.stopped`); a store another process writes is refused at once (on every rank of a torchrun
job); a failed write names the part and what the store keeps.  Non-finite features are never written: weights
holding NaN/inf are refused before any work, a video whose features come out non-finite is recorded as bad
(``non-finite features (layer L)``), and a run whose first videos are *all* non-finite stops with one error
(:data:`NONFINITE_LIMIT`) instead of filling the store with bad records.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from p3d.data.datasets import Sample, SampleList, VideoClipsDataset, video_ids
from p3d.data.loader import LoaderPlan, build_loader, plan_loader, probe_decode_rate
from p3d.data.video import normalize_id
from p3d.engine.distributed import all_gather_objects
from p3d.engine.inference import autocast, for_inference, iter_video_outputs
from p3d.engine.memory import check_memory, estimate_inference
from p3d.errors import OutputLockedError, StorageError
from p3d.fileio import sha256_file
from p3d.malloc import release_memory
from p3d.process import StopRequested, StopSignals
from p3d.representation.local import (
    PCA_NAME,
    LocalPCA,
    LocalSpec,
    load_local_pca,
    local_descriptors,
    pca_videos,
)
from p3d.representation.store import FeatureWriter, check_meta_compatible, list_parts, nonfinite_reason, read_meta
from p3d.spec import InputSpec

log = logging.getLogger(__name__)

DEFAULT_LAYERS = ("pool5",)
MAP_POOLING = ("max", "avg")
LOCAL_KEY = "local:"  # the local layer's raw map among a batch's outputs (no layer has this name)
# A run whose first NONFINITE_LIMIT videos all give non-finite features stops: the model or its precision is
# broken, and every further video would only add a bad record.
NONFINITE_LIMIT = 8


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
    """What a run did: videos written, bad videos (id -> reason; ``nonfinite`` of them for non-finite features),
    skipped (already done), clips, seconds, and the signal that stopped it early (None: it ran to the end).

    ``forward_seconds``: time in model batches (copy to the device, forward, results back); ``wait_seconds``: time
    the main loop waited for the loader's next video; ``workers``: decoding processes used; ``loader``: the
    measured plan when the loader was sized automatically (:func:`p3d.data.loader.plan_loader`).
    """

    written: int = 0
    bad: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    clips: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    wait_seconds: float = 0.0
    workers: int = 0
    loader: LoaderPlan | None = None
    nonfinite: int = 0
    stopped: int | None = None

    @property
    def videos_per_second(self) -> float:
        return (self.written + len(self.bad)) / self.seconds if self.seconds > 0 else 0.0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


def weights_record(model: nn.Module) -> dict[str, Any] | None:
    """Which weights a model holds, for provenance: the file it was loaded from and its SHA-256 (or the tag)."""
    cfg = model.pretrained_cfg
    if cfg.file and os.path.isfile(cfg.file):
        return {"file": str(cfg.file), "sha256": sha256_file(cfg.file), "tag": cfg.tag}
    if cfg.tag:
        return {"tag": cfg.tag}
    return None


def build_meta(
    model: nn.Module,
    layers: Sequence[str],
    *,
    num_clips: int,
    flip: bool,
    map_pooling: str,
    class_names: Sequence[str] | None,
    clip_level: bool = False,
    dataset: str = "",
    dense: dict[str, Any] | None = None,
    local: LocalSpec | None = None,
) -> dict[str, Any]:
    """Provenance stored with the features (``meta.json`` and every part's header): the model's config (the one
    :class:`~p3d.models.config.PretrainedCfg`, input spec included), its weights, and how clips were taken
    (``dense``: the window layout of a dense store, :func:`p3d.representation.dense.dense_meta`; ``local``: which
    local descriptors are kept, :meth:`LocalSpec.to_meta`)."""
    from p3d import __version__

    cfg = model.pretrained_cfg
    return {
        "model": cfg.architecture,
        "model_cfg": cfg.replace(file=None, sha256=None, extra={}).to_dict(),
        "weights": weights_record(model),
        "layers": list(layers),
        "num_clips": int(num_clips),
        "flip": bool(flip),
        "map_pooling": map_pooling,
        "crop": "centre",
        "clip_level": bool(clip_level),
        "class_names": list(class_names) if class_names else None,
        "dataset": dataset,
        "p3d_version": __version__,
        **({"dense": dict(dense)} if dense else {}),
        **({"local": local.to_meta()} if local is not None else {}),
    }


def _check_layers(
    model: nn.Module, names: Sequence[str], map_pooling: str, device: torch.device, local: str | None = None
) -> None:
    """Fail early on a bad layer name (or a ``local`` layer that is not a conv map), not after decoding a video."""
    spec: InputSpec = model.input_spec
    with torch.inference_mode():
        probe = torch.zeros(1, spec.channels, spec.clip_len, *spec.size, device=device)
        for v in model.forward_layers(probe, list(names)).values():
            reduce_layer(v, map_pooling)
        if local is not None:
            v = model.forward_layers(probe, [local])[local]
            if v.dim() != 5:
                raise ValueError(f"--local {local}: not a conv map (N, C, T, H, W) but {tuple(v.shape)}; try res5c")


def _check_finite_weights(model: nn.Module) -> None:
    """Weights holding NaN or inf would make every feature non-finite: refuse them before any work."""
    broken = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        src = model.pretrained_cfg.file or model.pretrained_cfg.tag or "the model"
        more = f" and {len(broken) - 3} more" if len(broken) > 3 else ""
        raise ValueError(
            f"{src}: the weights hold non-finite values (NaN/inf in {', '.join(broken[:3])}{more}); every feature "
            f"would be non-finite, so nothing is extracted"
        )


def _open_writer(out: str | os.PathLike[str], meta: dict[str, Any], rank: int, flush_every: int) -> FeatureWriter:
    """This rank's writer.  When any rank of the job cannot open the store (another process writes it, different
    settings, a storage error), every rank raises: none goes on alone, none waits for the others forever."""
    writer, error = None, None
    try:
        writer = FeatureWriter(out, meta, rank=rank, flush_every=flush_every)
    except Exception as e:
        error = e
    failures = all_gather_objects(None if error is None else (isinstance(error, OutputLockedError), str(error)))
    if error is not None:
        raise error
    for r, failure in enumerate(failures):
        if failure is not None:
            assert writer is not None
            writer.close()
            locked, msg = failure
            raise OutputLockedError(msg) if locked else ValueError(f"rank {r} could not open {out}: {msg}")
    assert writer is not None
    return writer


class _NonFiniteGuard:
    """Holds back the non-finite videos met before the run's first finite one; stops the run when there are
    :data:`NONFINITE_LIMIT` of them (or the run ends with nothing else)."""

    def __init__(self, writer: FeatureWriter, stats: ExtractStats, out: object) -> None:
        self.writer, self.stats, self.out = writer, stats, out
        self.held: list[tuple[str, str]] = []
        self.finite_seen = False

    def finite(self) -> None:
        self.finite_seen = True
        for vid, reason in self.held:
            self.bad(vid, reason)
        self.held.clear()

    def bad(self, vid: str, reason: str) -> None:
        self.writer.add_bad(vid, reason)
        self.stats.bad[vid] = reason
        self.stats.nonfinite += 1
        log.warning("bad %s: %s", vid, reason)

    def nonfinite(self, vid: str, reason: str) -> None:
        if self.finite_seen:
            self.bad(vid, reason)
            return
        self.held.append((vid, reason))
        if len(self.held) >= NONFINITE_LIMIT:
            self.fail()

    def fail(self) -> None:
        raise ValueError(
            f"{self.out}: the first {len(self.held)} videos all gave non-finite features ({self.held[0][1]}): the "
            f"model or its precision is broken (try --amp none); no record was written for them"
        )


def _record_missing(writer: FeatureWriter, missing: Sequence[str], stats: ExtractStats) -> None:
    """Videos the annotations list but the disk lacks: recorded as bad (once, by rank 0)."""
    for m in missing:
        mid = normalize_id(Path(m).name)
        if mid not in writer.done:
            writer.add_bad(mid, "file not found (listed by the dataset's annotations)")
            stats.bad[mid] = "file not found"


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
    num_workers: int | str | None = None,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
    rank: int = 0,
    world_size: int = 1,
    flush_every: int = 256,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
    local: LocalSpec | None = None,
    flow_from_rgb: Any = False,
) -> ExtractStats:
    """Extract video descriptors of ``samples`` into the feature store ``out``; see the module docstring.

    Args:
        model: a registry model with ``forward_layers(x, names)`` and ``input_spec``; run in eval mode.
        samples: the videos (any dataset format of :mod:`p3d.data`); ids from :func:`p3d.data.video_ids`.
        layers: names accepted by ``model.forward_layers`` (e.g. pool5, res5c, res4_last, logits, prob).
        batch_size: clips per forward pass (flipped clips count as clips).
        num_workers: decoding processes; ``None``: sized from measured rates on CUDA (:func:`plan_workers`),
            :func:`p3d.data.default_num_workers` elsewhere; ``"auto"``: sized from measured rates on any device.
        flow_from_rgb: a flow model fed from RGB videos: ``True`` or a :class:`p3d.data.flowclips.FlowFromRGB`
            (flow computed from the decoded frames on ``device``; not with ``flip`` or ``local``).
        rank, world_size: this process's shard is every ``world_size``-th video from ``rank`` (of the
            full list; those already in the store, written by any rank or an earlier run, are skipped).
        local: also keep these local descriptors (``meta`` must come from ``build_meta(..., local=local)``); with a
            PCA, rank 0 fits it first unless the store has it (:func:`fit_local_pca`; other ranks need it there).
    Returns:
        :class:`ExtractStats`.  Videos already in the store (any rank) are skipped; bad videos are recorded in
        the store with their reason and counted, never raised.  SIGTERM/SIGINT/SIGHUP stop the run after the video
        in hand, writing the pending chunk (``stats.stopped`` is the signal).
    Raises:
        OutputLockedError: another process writes this rank's part of the store.
        StorageError: a part could not be written (``kept`` says what the store holds).
        ValueError: non-finite weights, or non-finite features from every video (see the module docstring).
    """
    if map_pooling not in MAP_POOLING:
        raise ValueError(f"map_pooling must be one of {MAP_POOLING}, got {map_pooling!r}")
    if num_clips < 1 or batch_size < 1:
        raise ValueError(f"num_clips and batch_size must be >= 1, got {num_clips}, {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    items = list(samples.samples if isinstance(samples, SampleList) else samples)
    ids = video_ids(items)
    device = torch.device(device)
    clips = num_clips * (2 if flip else 1)
    need = estimate_inference(
        model,
        batch_size=max(1, min(batch_size, len(items) * clips)),
        num_clips=num_clips,
        flip=flip,
        num_workers=num_workers,
        device=device,
        amp=amp,
    )
    check_memory(need, "feature extraction")  # before the layer check's forward pass and any decoding
    net = for_inference(model, device)
    names = list(layers)
    _check_finite_weights(net)
    _check_layers(net, names, map_pooling, device, local.layer if local else None)
    pca = None
    if local is not None:
        if meta.get("local") != local.to_meta():
            raise ValueError("extract_features: meta['local'] must describe `local` (build_meta(..., local=local))")
        if local.pca_dim is not None:
            runtime = {"batch_size": batch_size, "num_workers": num_workers, "device": device, "amp": amp}
            pca = (
                fit_local_pca(net, items, out, local, num_clips=num_clips, flip=flip, **runtime)
                if rank == 0
                else load_local_pca(out, local)
            )

    if flow_from_rgb and (flip or local is not None):
        raise ValueError("flip and local descriptors are not available with flow computed from RGB frames "
                         "(flow_from_rgb); extract without them, or from `p3d flow` files")  # fmt: skip
    from tqdm import tqdm

    def forward(x: Tensor) -> dict[str, Tensor]:
        outs = net.forward_layers(x, names + ([local.layer] if local else []))
        res = {k: reduce_layer(outs[k], map_pooling) for k in names}
        if local is not None:
            res[LOCAL_KEY] = outs[local.layer]
        return res

    def counted(n: int, seconds: float) -> None:
        stats.clips += n
        stats.forward_seconds += seconds
        if on_batch is not None:
            on_batch(n)

    stats = ExtractStats()
    t0 = time.perf_counter()
    writer = _open_writer(out, meta, rank, flush_every)
    try:
        # shard the full, ordered list (not the remaining videos): every rank computes the same assignment even
        # when the ranks start at different times into a partly filled store
        shard = range(rank, len(items), world_size)
        mine = [i for i in shard if ids[i] not in writer.done]
        stats.skipped = len(shard) - len(mine)
        if rank == 0:
            _record_missing(writer, getattr(samples, "missing", []), stats)
        spec = net.input_spec
        ds = VideoClipsDataset(
            [items[i] for i in mine], spec, num_clips=num_clips, flip=flip, raw=True, flow_from_rgb=flow_from_rgb
        )
        prefetch = 2
        if num_workers == "auto" or (num_workers is None and device.type == "cuda"):
            stats.loader = plan_workers(net, ds, names, batch_size=batch_size, device=device, amp=amp)
            if stats.loader is not None:
                num_workers, prefetch = stats.loader.workers, stats.loader.prefetch_factor
                log.info("loader: %s", stats.loader.describe())
            else:
                num_workers = None
        elif isinstance(num_workers, str):
            raise ValueError(f"num_workers must be an integer, None or 'auto', got {num_workers!r}")
        loader = build_loader(ds, None, train=False, num_workers=num_workers, device=device, prefetch_factor=prefetch)
        stats.workers = loader.num_workers
        stop = StopSignals(on_signal=lambda sig: log.warning("signal %d: writing what is computed", sig))
        how = _VideoOutput(num_clips, flip, clip_level, local, pca)
        outputs = iter_video_outputs(
            _videos(loader, stop, stats),
            forward,
            batch_size=batch_size,
            device=device,
            amp=amp,
            prepare=ds.model_input_fn(),
            on_batch=counted,
        )
        guard = _NonFiniteGuard(writer, stats, out)
        bar = tqdm(total=len(mine), unit="video", disable=not progress, dynamic_ncols=True, desc=f"extract r{rank}")
        with bar, stop:
            try:
                for slot, feats, error in outputs:
                    i = mine[slot]
                    _write_video(writer, guard, stats, items[i], ids[i], feats, error, how)
                    bar.update(1)
                    bar.set_postfix(bad=len(stats.bad), refresh=False)
                    if stop.signal is not None:
                        break
            except StopRequested:
                pass  # the signal came while waiting for data: what is computed is in the writer
            except Exception:
                if stop.signal is None:
                    raise
                log.warning("the data pipeline failed after the signal; stopping", exc_info=True)
            stats.stopped = stop.signal
        if guard.held and stats.stopped is None:
            guard.fail()
    except StorageError as e:
        e.kept = e.kept or _kept(writer)
        raise
    finally:
        stats.seconds = time.perf_counter() - t0
        try:
            writer.close()
        except StorageError as e:
            e.kept = e.kept or _kept(writer)
            raise
        finally:
            release_memory()
    return stats


def plan_workers(
    net: nn.Module,
    dataset: VideoClipsDataset,
    layers: Sequence[str],
    *,
    batch_size: int,
    device: str | torch.device,
    amp: bool | str = False,
    probe_items: int = 2,
) -> LoaderPlan | None:
    """Size the decoding pool for ``net`` (ready for inference, on ``device``) reading ``dataset`` (one video per
    item): measures the model's clips/s on a resident batch of ``batch_size`` and one worker's decode rate on the
    first ``probe_items`` videos, then :func:`p3d.data.loader.plan_loader`.  ``None`` when nothing could be probed
    (an empty dataset or no readable video among the probed ones): the caller falls back to the default."""
    if len(dataset) == 0:
        return None
    try:
        decode = probe_decode_rate(dataset, max_items=probe_items)
    except ValueError:
        return None
    clips_per_item = dataset.num_clips * (2 if dataset.flip else 1)
    model = _forward_rate(net, net.input_spec, layers, batch_size, iters=3, device=device, amp=amp)
    return plan_loader(
        model / clips_per_item,
        decode,
        items_per_batch=batch_size / clips_per_item,
        item_bytes=clips_per_item * int(np.prod(dataset.clip_shape)),
    )


def _local_rows(
    maps: np.ndarray, local: LocalSpec, pca: LocalPCA | None, num_clips: int, flip: bool
) -> dict[str, np.ndarray] | str:
    """One video's local descriptors ``{layer: (clips, positions, D)}`` as stored (PCA applied), or the reason the
    video is recorded as bad instead (values beyond float16)."""
    x = local_descriptors(maps, local.pyramid, num_clips if flip else None)
    if pca is not None:
        x = pca(x)
    with np.errstate(over="ignore"):
        overflow = not np.isfinite(x.astype(np.float16)).all()
    if overflow:
        return f"local descriptors of {local.layer} are not finite in float16 (|x| > 65504 or NaN)"
    return {local.layer: x}


def fit_local_pca(
    model: nn.Module,
    samples: SampleList | Sequence[Sample],
    out: str | os.PathLike[str],
    local: LocalSpec,
    *,
    num_clips: int = 20,
    flip: bool = False,
    batch_size: int = 32,
    num_workers: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
) -> LocalPCA:
    """The store's PCA of local descriptors: loaded when ``out`` has one, else fitted once and saved there.

    Fitted on a reservoir sample of ``local.pca_descriptors`` descriptors (seed ``local.seed``) of
    ``local.pca_videos`` videos evenly spread over ``samples`` (unreadable ones are skipped), computed with the
    same clips, flip and pyramid as the extraction; those videos are computed again by the extraction itself.
    Never refitted: a store whose parts hold local descriptors but whose PCA file is gone is an error.
    """
    from p3d.representation.encoders import ids_digest, sample_descriptors

    if local.pca_dim is None:
        raise ValueError("fit_local_pca: the LocalSpec asks for no PCA (pca_dim=None)")
    old = read_meta(out)
    if old is not None:  # a store of other local descriptors (or none): the writer would refuse it anyway
        check_meta_compatible(old, {"local": local.to_meta()}, str(out))
    path = Path(out) / PCA_NAME
    if path.exists():
        return load_local_pca(out, local)
    if list_parts(out):
        raise ValueError(
            f"{out}: holds features but no {PCA_NAME}; its local descriptors were projected by that file, so it "
            f"cannot be fitted again: restore it or use another output directory"
        )
    items = list(samples.samples if isinstance(samples, SampleList) else samples)
    picked = [items[i] for i in pca_videos(len(items), local.pca_videos)]
    ids = video_ids(picked)
    device = torch.device(device)
    net = for_inference(model, device)
    spec = net.input_spec
    ds = VideoClipsDataset(picked, spec, num_clips=num_clips, flip=flip, raw=True)
    loader = build_loader(ds, None, train=False, num_workers=num_workers, device=device, prefetch_factor=2)
    used: list[str] = []

    def forward(x: Tensor) -> dict[str, Tensor]:
        return {LOCAL_KEY: net.forward_layers(x, [local.layer])[local.layer]}

    def descriptors():
        videos = ((it["video_index"], it["clips"] if it["valid"] else None, it["error"]) for it in loader)
        for slot, feats, error in iter_video_outputs(
            videos, forward, batch_size=batch_size, device=device, amp=amp, prepare=ds.model_input_fn()
        ):
            if feats is None:
                log.warning("local PCA: skipped %s: %s", ids[slot], error)
                continue
            used.append(ids[slot])
            x = local_descriptors(feats[LOCAL_KEY], local.pyramid, num_clips if flip else None)
            yield x.reshape(-1, x.shape[-1])

    sample = sample_descriptors(descriptors(), local.pca_descriptors, local.seed)
    info = {
        "layer": local.layer,
        "pyramid": list(local.pyramid),
        "dim": local.pca_dim,
        "fitted_on": {"videos": len(used), "descriptors": len(sample), "ids_sha256": ids_digest(used)},
        "seed": local.seed,
    }
    pca = LocalPCA.fit(sample, local.pca_dim, info)
    pca.save(path)
    log.info("local PCA %d -> %d fitted on %d descriptors of %d videos: %s", pca.input_dim, pca.dim, len(sample),
             len(used), path)  # fmt: skip
    return pca


def _videos(loader: Any, stop: StopSignals, stats: ExtractStats) -> Iterator[tuple[int, Tensor | None, str | None]]:
    """``(video index, clips or None, error)`` of each loader item, adding the time spent waiting for it to
    ``stats.wait_seconds``; waiting for an item ends at once on a stop signal (a video that never arrives, e.g. on
    a hung file system, cannot hold the stop up)."""
    items = iter(loader)
    while True:
        t = time.perf_counter()
        with stop.interruptible():
            it = next(items, None)
        stats.wait_seconds += time.perf_counter() - t
        if it is None:
            return
        yield it["video_index"], it["clips"] if it["valid"] else None, it["error"]


@dataclass(frozen=True)
class _VideoOutput:
    """How a video's clip outputs become its stored rows."""

    num_clips: int
    flip: bool
    clip_level: bool
    local: LocalSpec | None = None
    pca: LocalPCA | None = None


def _write_video(
    writer: FeatureWriter,
    guard: _NonFiniteGuard,
    stats: ExtractStats,
    sample: Sample,
    vid: str,
    feats: dict[str, np.ndarray] | None,
    error: str | None,
    how: _VideoOutput,
) -> None:
    """One video's outcome into the store: its features, or its record as bad (unreadable, non-finite)."""
    if feats is None:
        writer.add_bad(vid, error or "unreadable")
        stats.bad[vid] = error or "unreadable"
        log.warning("skipped %s: %s", sample.path, error)
        return
    maps = feats.pop(LOCAL_KEY, None)
    video, clip = _video_features(feats, how.num_clips, how.flip, how.clip_level)
    reason = nonfinite_reason(video, clip)
    kept = None
    if reason is None and how.local is not None:
        kept = _local_rows(maps, how.local, how.pca, how.num_clips, how.flip)
        reason, kept = (kept, None) if isinstance(kept, str) else (None, kept)
    if reason is not None:
        guard.nonfinite(vid, reason)
        return
    guard.finite()
    writer.add(vid, video, label=sample.labels, clip=clip, local=kept)
    stats.written += 1


def _kept(writer: FeatureWriter) -> str:
    return f"{writer.written} video(s) in {writer.parts} complete part(s) of this run, and every earlier part"


def _video_features(
    feats: dict[str, np.ndarray], num_clips: int, flip: bool, clip_level: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Video descriptor (mean over clips) and, with ``clip_level``, the clip descriptors; a flipped run averages
    each clip with its mirror (rows ``k`` and ``k + num_clips``) first."""
    if flip:
        feats = {n: 0.5 * (v[:num_clips] + v[num_clips:]) for n, v in feats.items()}
    return {n: v.mean(axis=0) for n, v in feats.items()}, (feats if clip_level else None)


def forward_throughput(
    model: nn.Module,
    spec: InputSpec,
    layers: Sequence[str],
    batch_size: int,
    iters: int = 5,
    device: str | torch.device = "cpu",
    amp: bool | str = False,
    map_pooling: str = "max",
) -> float:
    """Pure model throughput in clips/s: ``forward_layers`` on a resident random batch (1 warm-up pass), with the
    same inference preparation as :func:`extract_features`."""
    device = torch.device(device)
    return _forward_rate(for_inference(model, device), spec, layers, batch_size, iters, device, amp, map_pooling)


def _forward_rate(
    net: nn.Module,
    spec: InputSpec,
    layers: Sequence[str],
    batch_size: int,
    iters: int,
    device: str | torch.device,
    amp: bool | str,
    map_pooling: str = "max",
) -> float:
    """Clips/s of ``net`` (already prepared for inference on ``device``) on a resident random batch."""
    device = torch.device(device)
    h, w = spec.size
    x = torch.randn(batch_size, spec.channels, spec.clip_len, h, w, device=device)
    with torch.inference_mode(), autocast(device, amp):
        for i in range(iters + 1):
            if i == 1:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            outs = net.forward_layers(x, list(layers))
            _ = {k: reduce_layer(v, map_pooling).float().cpu() for k, v in outs.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_size * iters / (time.perf_counter() - t0)
