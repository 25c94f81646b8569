"""Video-level testing as the paper (Sec. 4.1): 20 clips per video, centre crop, clip scores averaged.

:func:`evaluate_videos` runs a model over every video of a sample list and returns an :class:`EvalResult` with

* clip hit@1 — each clip on its own; video hit@1 and hit@5 — the averaged softmax scores of the video's clips
  (multi-label aware: a hit when *any* true label is among the top k);
* per-class accuracy (video hit@1 over the videos of each class) and the confusion matrix (first true label
  against the top prediction);
* per-video predictions (top-k labels and scores).

Clips go through the model ``clip_batch`` at a time, taken across video boundaries (the clip stream of
:func:`p3d.representation.extract.iter_video_outputs`, shared with ``p3d extract``), so memory stays bounded whatever
``num_clips``.
Under ``torchrun`` each rank tests a share of the videos (the last shares padded by repeating videos);
results are gathered and keyed by video index, so a padded duplicate is counted once.  Unreadable videos are
logged, left out of the scores and listed in ``failed``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from p3d.engine.distributed import ShardedSampler, all_gather_objects
from p3d.engine.inference import for_inference, iter_video_outputs
from p3d.engine.metrics import multi_hot, topk_hits
from p3d.fileio import atomic_write_text
from p3d.malloc import release_memory

__all__ = ["EvalResult", "evaluate_videos", "score_videos", "metrics_from_scores", "write_predictions"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    classes: list[str]
    video_ids: list[str]
    paths: list[str]
    labels: list[tuple[int, ...]]
    scores: np.ndarray  # (V, K) averaged softmax scores
    clip_hits: int
    num_clips: int
    failed: dict[str, str] = field(default_factory=dict)  # path -> why it could not be read
    seconds: float = 0.0

    @property
    def num_videos(self) -> int:
        return len(self.video_ids)

    def metrics(self, topk: int = 5) -> dict[str, Any]:
        m = metrics_from_scores(self.scores, self.labels, len(self.classes), topk=topk)
        m["clip_hit@1"] = self.clip_hits / self.num_clips if self.num_clips else float("nan")
        m["num_videos"] = self.num_videos
        m["num_clips"] = self.num_clips
        m["num_failed"] = len(self.failed)
        m["clips_per_s"] = self.num_clips / self.seconds if self.seconds > 0 else float("nan")
        m["per_class"] = {
            self.classes[k]: (None if np.isnan(a) else float(a)) for k, a in enumerate(m.pop("per_class_array"))
        }
        return m


def metrics_from_scores(
    scores: np.ndarray, labels: list[tuple[int, ...]], num_classes: int, topk: int = 5
) -> dict[str, Any]:
    """Video hit@1 / hit@``topk``, per-class accuracy and the confusion matrix of ``(V, K)`` scores."""
    keep = [i for i, lab in enumerate(labels) if lab]  # unlabelled videos (no ground truth) are not scored
    s = scores[keep] if len(keep) else np.zeros((0, num_classes))
    labs = [labels[i] for i in keep]
    y = multi_hot(labs, num_classes)
    hit1, hitk = topk_hits(s, y, 1), topk_hits(s, y, topk)
    per_class = np.full(num_classes, np.nan)
    for c in range(num_classes):
        rows = [i for i, lab in enumerate(labs) if c in lab]
        if rows:
            per_class[c] = hit1[rows].mean()
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    if len(labs):
        pred = s.argmax(1)
        for lab, p in zip(labs, pred, strict=True):
            confusion[lab[0], p] += 1
    return {
        "video_hit@1": float(hit1.mean()) if len(hit1) else float("nan"),
        f"video_hit@{topk}": float(hitk.mean()) if len(hitk) else float("nan"),
        "mean_class_accuracy": float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        "per_class_array": per_class,
        "confusion": confusion.tolist(),
    }


def score_videos(
    model: nn.Module,
    dataset: Any,
    *,
    device: torch.device | str = "cpu",
    clip_batch: int = 8,
    amp: str = "none",
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    max_videos: int | None = None,
    progress: bool = False,
) -> tuple[dict[int, dict[str, Any]], float]:
    """Score this rank's share of a :class:`~p3d.data.VideoClipsDataset` (``flat=False``).

    Clips go through the model ``clip_batch`` at a time, taken across video boundaries
    (:func:`p3d.engine.inference.iter_video_outputs`, the stream ``p3d extract`` uses).  Returns
    ``{video_index: {"scores": (K,) mean softmax, "clip_hits": int, "num_clips": int, "valid": True}}`` (or
    ``{"valid": False, "error": reason}`` for a video that could not be read) and the seconds spent.  The model runs
    with BatchNorm folded (:func:`p3d.engine.inference.for_inference`); its own mode is restored.
    """
    from p3d.data import build_loader
    from p3d.engine.memory import check_memory, estimate_inference

    device = torch.device(device)
    n = len(dataset) if max_videos is None else min(len(dataset), max_videos)
    clips = getattr(dataset, "num_clips", 1) * (2 if getattr(dataset, "flip", False) else 1)
    need = estimate_inference(
        model,
        dataset.spec,
        batch_size=max(1, min(clip_batch, n * clips)),  # a batch never holds more clips than there are
        num_clips=getattr(dataset, "num_clips", 1),
        flip=getattr(dataset, "flip", False),
        num_workers=num_workers,
        device=device,
        amp=amp,
    )
    check_memory(need, "testing")
    sampler = ShardedSampler(n, rank=rank, world_size=world_size, shuffle=False, pad=True)
    loader = build_loader(
        dataset,
        None,
        train=False,
        num_workers=num_workers,
        device=device,
        sampler=sampler,
        persistent_workers=False,
        prefetch_factor=2,
    )
    was_training = model.training
    net = for_inference(model, device)
    out: dict[int, dict[str, Any]] = {}
    true: dict[int, set[int]] = {}
    t0 = time.perf_counter()
    it = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="test", unit="video", dynamic_ncols=True)

    def videos():
        for item in it:
            v = item["video_index"]
            if not item["valid"]:
                yield v, None, item["error"]
                continue
            label = item["label"]
            true[v] = set(torch.nonzero(label).flatten().tolist()) if isinstance(label, Tensor) else {int(label)}
            yield v, item["clips"], None  # (N, C, T, H, W)

    prepare = dataset.model_input_fn() if getattr(dataset, "raw", False) else None
    for v, outs, error in iter_video_outputs(
        videos(), lambda x: {"logits": net(x)}, batch_size=clip_batch, device=device, amp=amp, prepare=prepare
    ):
        if outs is None:
            out[v] = {"valid": False, "error": error}
            continue
        p = torch.from_numpy(outs["logits"]).softmax(dim=1)
        hits = sum(int(i) in true[v] for i in p.argmax(1).tolist())
        out[v] = {"valid": True, "scores": p.mean(0).numpy(), "clip_hits": hits, "num_clips": int(p.shape[0])}
    model.train(was_training)
    return out, time.perf_counter() - t0


def evaluate_videos(
    model: nn.Module,
    samples: Any,
    spec: Any = None,
    *,
    num_clips: int = 20,
    clip_batch: int = 8,
    device: torch.device | str = "cpu",
    amp: str = "none",
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    max_videos: int | None = None,
    progress: bool = False,
    flow_from_rgb: Any = False,
) -> EvalResult:
    """Video-level test of ``model`` on ``samples`` (a :class:`~p3d.data.SampleList`), every rank's share gathered.

    ``spec`` defaults to ``model.input_spec``.  ``flow_from_rgb`` (a flow model; ``True`` or a
    :class:`p3d.data.flowclips.FlowFromRGB`): ``samples`` are RGB videos and the flow is computed from their frames
    on ``device``.  Every rank returns the full result.
    """
    from p3d.data import VideoClipsDataset

    spec = spec if spec is not None else model.input_spec
    ds = VideoClipsDataset(samples, spec, num_clips=num_clips, flat=False, raw=True, flow_from_rgb=flow_from_rgb)
    part, seconds = score_videos(
        model,
        ds,
        device=device,
        clip_batch=clip_batch,
        amp=amp,
        num_workers=num_workers,
        rank=rank,
        world_size=world_size,
        max_videos=max_videos,
        progress=progress,
    )
    merged: dict[int, dict[str, Any]] = {}
    for shard in all_gather_objects(part):
        merged.update(shard)  # keyed by video index: padded duplicates collapse
    seconds = max(all_gather_objects(seconds))
    classes = list(samples.classes)
    good = sorted(v for v, r in merged.items() if r["valid"])
    failed = {ds.samples[v].path: merged[v]["error"] for v in sorted(merged) if not merged[v]["valid"]}
    k = len(classes)
    release_memory()
    return EvalResult(
        classes=classes,
        video_ids=[ds.samples[v].video_id for v in good],
        paths=[ds.samples[v].path for v in good],
        labels=[tuple(ds.samples[v].labels) for v in good],
        scores=np.stack([merged[v]["scores"] for v in good]) if good else np.zeros((0, k)),
        clip_hits=sum(merged[v]["clip_hits"] for v in good),
        num_clips=sum(merged[v]["num_clips"] for v in good),
        failed=failed,
        seconds=seconds,
    )


def write_predictions(result: EvalResult, path: str | Path, topk: int = 5) -> None:
    """One JSON line per video: id, path, true labels, top-k labels with scores, whether top-1 is right."""
    lines = []
    k = min(topk, len(result.classes))
    for i, vid in enumerate(result.video_ids):
        s = result.scores[i]
        top = np.argsort(-s, kind="stable")[:k]
        lines.append(
            json.dumps(
                {
                    "video_id": vid,
                    "path": result.paths[i],
                    "labels": [result.classes[j] for j in result.labels[i]],
                    "top": [[result.classes[j], round(float(s[j]), 6)] for j in top],
                    "correct": bool(result.labels[i]) and int(top[0]) in result.labels[i],
                }
            )
        )
    for p, reason in result.failed.items():
        lines.append(json.dumps({"path": p, "error": reason}))
    atomic_write_text(path, "\n".join(lines) + "\n")
