"""The training loop: the paper's protocol (Sec. 4.1), resumable exactly, distributed with ``torchrun``.

One optimizer step ("iteration") is ``accum_steps`` forward/backward passes of ``batch_size`` clips on each
process; the learning rate is divided by 10 every ``lr_step`` iterations; training stops after
``iterations``.  SGD with momentum 0.9.  Optional: bf16/fp16 autocast (a ``GradScaler`` for fp16),
channels-last weights, ``torch.compile``.

Safety:

* one writer per run folder: :meth:`Trainer.fit` holds the folder's lock (:class:`p3d.fileio.OutputLock`, taken by
  rank 0 for the whole job), so a second ``p3d train`` on it is refused at once, naming the holder;
* checkpoints every ``ckpt_every`` iterations, at the end, and on SIGTERM/SIGINT/SIGHUP (a second SIGINT aborts at
  once), and when the launcher that started this process dies (``torchrun`` killed); writes are atomic and
  checksummed, only rank 0 writes;
* ``resume`` restores model, optimizer, scaler, iteration, data position (epoch and batches
  consumed) and the random states of every rank, so the resumed run computes what the uninterrupted one would;
  settings given again apply when they may change and are refused with the reason when they may not
  (:func:`p3d.engine.config.resume_config`);
* a non-finite loss stops the run with :class:`DivergenceError` before the optimizer applies it: the weights
  and the last checkpoint stay good;
* an unreadable video is skipped by the dataset (logged), never fatal; the distinct files, with their reasons, are
  gathered from every rank and DataLoader worker, kept in the checkpoint across resumes, counted in the metrics
  (``skipped_videos``) and listed in ``<run>/skipped.json``;
* a failed write (full disk, read-only folder) is one :class:`~p3d.errors.StorageError` naming the file and the
  last good checkpoint.

Metrics go to ``<run>/metrics.jsonl`` (one JSON object per logged iteration / validation) and TensorBoard
(``<run>/tb``); a tqdm bar shows loss, learning rate and clips/s.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from p3d.engine import checkpoint as ckpt
from p3d.engine.config import DEFAULT_MODEL, TrainConfig, resume_config, save_config
from p3d.engine.distributed import DistInfo, ShardedSampler, all_gather_objects, init_distributed
from p3d.engine.inference import autocast
from p3d.engine.memory import check_memory, estimate_training
from p3d.errors import OutputLockedError, StorageError
from p3d.fileio import OutputLock, atomic_write_json, atomic_write_text, check_writable, storage_error
from p3d.malloc import release_memory
from p3d.process import StopSignals, parent_alive

__all__ = ["DivergenceError", "TrainResult", "Trainer", "build_model", "build_samples_for"]

log = logging.getLogger(__name__)


class DivergenceError(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the last good checkpoint."""


@dataclass
class TrainResult:
    status: str  # "completed" or "stopped"
    iteration: int
    run_dir: Path
    checkpoint: Path | None
    signal: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    clips_per_s: float = float("nan")


# ---------------------------------------------------------------------------------------------------------
# Model and data from a config
# ---------------------------------------------------------------------------------------------------------
def _model_options(cfg: TrainConfig, num_classes: int) -> dict[str, Any]:
    m = cfg.model
    opts: dict[str, Any] = {"num_classes": num_classes}
    for key in ("pattern", "width", "layers", "dropout", "style", "in_channels"):
        v = getattr(m, key)
        if v is not None:
            opts[key] = tuple(v) if key == "layers" else v
    return opts


def build_model(cfg: TrainConfig, classes: Sequence[str]) -> nn.Module:
    """The model of ``cfg.model`` for ``classes``, initialised as configured: from scratch, from a 2D ImageNet
    ResNet (``imagenet_2d``), or from P3D weights (``pretrained``: any form :func:`p3d.models.load_model` reads —
    a tag, a ``.safetensors``, a ``p3d train`` checkpoint or run folder; the classifier is kept fresh when the class
    count differs, and options the weights fix may not be contradicted).  BatchNorm is frozen except the first when
    ``freeze_bn``; the model's input spec follows ``cfg.data`` (clip length, sizes, stride) with the weights' own
    colour/mean convention, and its config records the class names."""
    from p3d.models import create_model, load_2d_resnet, load_model

    m = cfg.model
    if m.pretrained and m.imagenet_2d:
        raise ValueError("model.pretrained and model.imagenet_2d are exclusive: pick one initialisation")
    opts = _model_options(cfg, len(classes))
    if m.pretrained:
        model = load_model(m.pretrained, m.name, **opts)
    else:
        model = create_model(m.name or DEFAULT_MODEL, **opts)
    if m.imagenet_2d:
        report = load_2d_resnet(model, m.imagenet_2d, temporal_init=m.temporal_init)
        log.info("%s", report)
    d = cfg.data
    spec = model.input_spec.replace(clip_len=d.clip_len, size=d.size, resize=d.resize, frame_stride=d.frame_stride)
    model.pretrained_cfg = model.pretrained_cfg.replace(input=spec, class_names=tuple(classes))
    if m.freeze_bn:
        if not hasattr(model, "freeze_bn"):
            raise ValueError(f"model.freeze_bn=true but {model.pretrained_cfg.architecture} has no BatchNorm to freeze")
        model.freeze_bn(keep_first=True)
    return model


def lr_factor(step: int, gamma: float, warmup: int = 0):
    """Learning-rate multiplier at iteration ``i``: ``gamma ** (i // step)`` (the paper's step schedule), ramped
    linearly from ``1/warmup`` over the first ``warmup`` iterations when ``warmup > 0``."""

    def factor(i: int) -> float:
        ramp = min(1.0, (i + 1) / warmup) if warmup > 0 else 1.0
        return ramp * gamma ** (i // step)

    return factor


def build_samples_for(cfg: TrainConfig, train: bool):
    """The training (``train=True``) or validation sample list of ``cfg.data``; ``None`` when no validation
    list is configured."""
    from p3d.data import build_samples

    d = cfg.data
    if d.root is None:
        raise ValueError("data.root is not set (give --data-root or data.root in the config)")
    kind = d.kind
    if train:
        subset = d.train_subset or {"ucf101": "train", "activitynet": "training"}.get(kind)
        split = d.split if d.split is not None else (1 if kind == "ucf101" else "train" if kind == "kinetics" else None)
        return build_samples(kind, d.root, annotations=d.annotations, split=split, subset=subset, classes=d.classes)
    if kind in ("folder", "manifest", "sports1m"):
        if d.val_root is None:
            return None
        return build_samples(
            kind, d.val_root, annotations=None if kind != "sports1m" else d.annotations, classes=d.classes
        )
    subset = d.val_subset or {"ucf101": "test", "activitynet": "validation"}.get(kind)
    if d.val_split is not None:
        split = d.val_split
    elif kind == "ucf101":
        split = d.split or 1  # the test list of the training split
    else:
        split = "val"
    return build_samples(
        kind, d.val_root or d.root, annotations=d.annotations, split=split, subset=subset, classes=d.classes
    )


# ---------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------
class _Metrics:
    """JSONL + TensorBoard writer (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, resume_iteration: int | None) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_iteration is not None and self.path.exists():  # drop what the interrupted run logged after
            kept = [ln for ln in self.path.read_text().splitlines() if ln.strip() and _iter_of(ln) <= resume_iteration]
            atomic_write_text(self.path, "\n".join(kept) + "\n" if kept else "")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("tensorboard is not installed (pip install tensorboard); metrics go to JSONL only")
            else:
                self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_iteration)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:
            raise storage_error(self.path, e, "appending") from None
        if self.tb is not None:
            it = record["iteration"]
            for k, v in record.items():
                if k != "iteration" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(k, v, it)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _iter_of(line: str) -> int:
    try:
        return int(json.loads(line).get("iteration", 0))
    except (json.JSONDecodeError, AttributeError):
        return 0


class _Throughput:
    """Training clips/s since the last call (or restart), excluding validation and checkpoint time."""

    def __init__(self, iteration: int, clips_per_step: int) -> None:
        self.clips_per_step = clips_per_step
        self.restart(iteration)

    def restart(self, iteration: int) -> None:
        self.t, self.it = time.perf_counter(), iteration

    def __call__(self, iteration: int) -> float:
        now = time.perf_counter()
        value = (iteration - self.it) * self.clips_per_step / max(now - self.t, 1e-9)
        self.t, self.it = now, iteration
        return value


class Trainer:
    """Train ``cfg`` (see :mod:`p3d.engine.config`).  ``resume``: ``True`` continues from the newest good
    checkpoint in the run directory (an error if there is none), ``"auto"`` does so when there is one and starts
    afresh otherwise, a path continues from that checkpoint file."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool | str | Path = False,
        dist_info: DistInfo | None = None,
        given: Iterable[str] | None = None,
    ) -> None:
        """``given``: on resume, the keys of ``cfg`` set explicitly (:func:`p3d.engine.config.given_keys`); the
        others keep the run's saved values (a bare ``p3d train --out RUN --resume`` changes nothing).  ``None``:
        every key of ``cfg`` is meant."""
        cfg.validate()
        self.given = None if given is None else set(given)
        self.cfg = cfg
        self.dist = dist_info or init_distributed(cfg.run.device)
        self.device = self.dist.device
        self.run_dir = Path(cfg.run.out_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.resume = resume
        self._stop = StopSignals(on_signal=self._log_signal)
        self._last_ckpt: Path | None = None
        self.resume_changes: dict[str, tuple[Any, Any]] = {}
        self.history: list[dict[str, Any]] = []  # resumes with changed settings: iteration and changes
        self.skipped: dict[str, str] = {}  # unreadable training videos of all ranks: path -> reason

    # setup ---------------------------------------------------------------------------------------------------
    def _seed(self) -> None:
        import random

        s = self.cfg.run.seed
        random.seed(s + self.dist.rank)
        np.random.seed((s + self.dist.rank) % 2**32)
        torch.manual_seed(s)  # identical initial weights on every rank

    def _setup(self) -> dict[str, Any] | None:
        from p3d.data import ClipDataset, build_loader

        cfg = self.cfg
        resume_state = self._find_resume()
        if resume_state is not None:
            # The checkpoint's configuration, with the changes that may be made to a running run.
            where = str(self._last_ckpt)
            saved = TrainConfig.from_dict(resume_state["config"], where)
            self.cfg, self.resume_changes = resume_config(saved, cfg, self.given, where)
            cfg = self.cfg
            self.skipped = dict(resume_state.get("skipped", {}))
            self.history = list(resume_state.get("history", []))
            if self.resume_changes:
                changed = {k: list(v) for k, v in self.resume_changes.items()}
                self.history.append({"iteration": int(resume_state["iteration"]), "changed": changed})
        self._seed()
        self.train_samples = build_samples_for(cfg, train=True)
        if len(self.train_samples) == 0:
            raise ValueError(f"{cfg.data.root}: the training list has no readable entries")
        if getattr(self.train_samples, "missing", None):
            log.warning(
                "%d annotated videos not found (first: %s)",
                len(self.train_samples.missing),
                self.train_samples.missing[0],
            )
        self.classes = list(self.train_samples.classes)
        self.val_samples = build_samples_for(cfg, train=False) if cfg.run.val_every > 0 else None
        if self.val_samples is not None and len(self.val_samples) == 0:
            self.val_samples = None
        self.model = build_model(cfg, self.classes).to(self.device)
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.spec = self.model.input_spec
        self.multilabel = bool(self.train_samples.multilabel)
        # refused here, before any clip is decoded: a size that cannot fit must not surface as every video
        # "unreadable" or as the kernel killing the run
        need = estimate_training(
            self.model,
            batch_size=cfg.optim.batch_size,
            num_workers=cfg.data.num_workers,
            device=self.device,
            amp=cfg.run.amp,
        )
        check_memory(need, "training")

        self.dataset = ClipDataset(self.train_samples, self.spec, seed=cfg.run.seed, flip=cfg.data.flip)
        self.sampler = ShardedSampler(
            len(self.dataset), rank=self.dist.rank, world_size=self.dist.world_size, shuffle=True, seed=cfg.run.seed
        )
        if self.sampler.shard_size < cfg.optim.batch_size:
            raise ValueError(
                f"optim.batch_size={cfg.optim.batch_size} exceeds this process's share of the "
                f"{len(self.dataset)} training videos ({self.sampler.shard_size}); lower the batch size"
            )
        self.loader_kwargs = dict(
            num_workers=cfg.data.num_workers, seed=cfg.run.seed, persistent_workers=False, sampler=self.sampler
        )
        self._build_loader = lambda: build_loader(self.dataset, cfg.optim.batch_size, train=True, **self.loader_kwargs)

        params = [p for p in self.model.parameters() if p.requires_grad]
        o = cfg.optim
        self.optimizer = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.run.amp == "fp16")

        self.net: nn.Module = self.model
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DDP(self.net, device_ids=ids)
        self.ddp = self.net  # no_sync() lives here
        if cfg.run.compile:  # after DDP, so DDP's communication hooks stay outside the compiled graph
            self.net = torch.compile(self.net)

        self.iteration, self.epoch, self.position = 0, 0, 0
        if resume_state is not None:
            self._restore(resume_state)
        return resume_state

    def _find_resume(self) -> dict[str, Any] | None:
        if not self.resume:
            return None
        if self.resume is True or self.resume == "auto":
            found = ckpt.latest_checkpoint(self.ckpt_dir)
            if found is None:
                if self.resume == "auto":
                    return None
                raise FileNotFoundError(f"{self.ckpt_dir}: no checkpoint to resume from")
            self._last_ckpt, state = found
        else:
            self._last_ckpt = Path(self.resume)
            state = ckpt.load_checkpoint(self.resume)
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        o = self.cfg.optim
        for g in self.optimizer.param_groups:  # the saved groups carry the saved constants; the config decides
            g["momentum"], g["weight_decay"] = o.momentum, o.weight_decay
        if state["scaler"] and self.scaler.is_enabled():  # empty when saved without fp16 (run.amp may change)
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        rngs = state["rng"]
        ckpt.set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])

    # checkpoints ---------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "pretrained_cfg": self.model.pretrained_cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "epoch": self.epoch,
            "position": self.position,
            "world_size": self.dist.world_size,
            "skipped": dict(sorted(self.skipped.items())),
            "history": self.history,
        }

    def save(self) -> Path | None:
        # every rank's random state and its unreadable videos not shared yet; collective: all ranks call it
        gathered = all_gather_objects((ckpt.rng_state(), self._new_failures(wait=5.0)))
        self._merge_failures(g[1] for g in gathered)
        if not self.dist.is_main:
            return None
        path = ckpt.checkpoint_path(self.ckpt_dir, self.iteration)
        ckpt.save_checkpoint(path, {**self._state(), "rng": [g[0] for g in gathered]})
        ckpt.prune_checkpoints(self.ckpt_dir, self.cfg.run.keep_checkpoints)
        self._last_ckpt = path
        return path

    # ownership, signals, unreadable videos --------------------------------------------------------------------
    @contextlib.contextmanager
    def _own_run_folder(self) -> Iterator[None]:
        """Rank 0 checks the run folder is writable and locks it for the whole job; every rank raises the same
        one-line error when it cannot (so a refused job ends on all ranks at once)."""
        lock = OutputLock(self.run_dir, what="this run folder")
        problem = None
        if self.dist.is_main:
            try:
                check_writable(self.run_dir)
                lock.acquire()
            except OutputLockedError as e:
                problem = ("locked", str(e), "")
            except StorageError as e:
                problem = ("storage", e.path, e.reason)
        rank0 = all_gather_objects(problem)[0]
        if rank0 is not None:
            kind, what, reason = rank0
            raise OutputLockedError(what) if kind == "locked" else StorageError(what, reason)
        try:
            yield
        finally:
            lock.release()

    def _log_signal(self, signum: int) -> None:
        if self.dist.is_main:
            log.warning("received %s: checkpointing at the end of this iteration", signal.Signals(signum).name)

    @property
    def _stop_signal(self) -> int | None:
        return self._stop.signal

    def _new_failures(self, wait: float = 0.0) -> dict[str, str]:
        """This rank's unreadable videos that the run's list does not hold yet."""
        return {p: r for p, r in self.dataset.collect_failures(timeout=wait).items() if p not in self.skipped}

    def _merge_failures(self, parts: Iterable[dict[str, str]]) -> None:
        n = len(self.skipped)
        for part in parts:
            for p, r in part.items():
                self.skipped.setdefault(p, r)
        if self.dist.is_main and len(self.skipped) > n:
            self._write_skipped()

    def _write_skipped(self) -> None:
        atomic_write_json(
            self.run_dir / "skipped.json", {"count": len(self.skipped), "videos": dict(sorted(self.skipped.items()))}
        )

    # the loop ------------------------------------------------------------------------------------------------
    def _batches(self):
        """Yield batches forever, tracking (epoch, position) = batches consumed in the current epoch."""
        while True:
            self.sampler.set_epoch(self.epoch, start=self.position * self.cfg.optim.batch_size)
            self.dataset.set_epoch(self.epoch)
            for batch in self._build_loader():
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float())
        return F.cross_entropy(logits, target)

    def _validate(self) -> dict[str, Any]:
        from p3d.engine.evaluate import evaluate_videos

        d = self.cfg.data
        res = evaluate_videos(
            self.model,
            self.val_samples,
            self.spec,
            num_clips=d.val_clips,
            clip_batch=self.cfg.optim.batch_size,
            device=self.device,
            amp=self.cfg.run.amp,
            num_workers=d.num_workers,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            max_videos=d.val_max_videos,
        )
        m = res.metrics()
        return {k: m[k] for k in ("video_hit@1", "video_hit@5", "clip_hit@1", "mean_class_accuracy", "num_videos")}

    def _set_lr(self) -> float:
        """The learning rate of the coming iteration, a pure function of the configuration and the iteration (so a
        resumed run, or an fp16 step the gradient scaler skips, never shifts the schedule)."""
        o = self.cfg.optim
        lr = o.lr * lr_factor(o.lr_step, o.lr_gamma, o.warmup)(self.iteration)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def _step(self, batches) -> tuple[float, bool]:
        """One iteration: ``accum_steps`` forward/backward passes, then the optimizer step.  Returns the mean loss
        over ranks and whether any rank was signalled to stop; a non-finite loss raises before the update."""
        o, r = self.cfg.optim, self.cfg.run
        lr = self._set_lr()
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(o.accum_steps):
            x, y = next(batches)
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            sync = micro == o.accum_steps - 1 or not self.dist.distributed
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with autocast(self.device, r.amp):
                    loss = self._loss(self.net(x), y) / o.accum_steps
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        # One collective per iteration: the mean loss, whether any rank was signalled (or lost its launcher), and
        # how many unreadable videos the ranks met that the run's list lacks (then shared by all).
        if not parent_alive():
            self._stop.request(signal.SIGHUP)
        new = self._new_failures()
        flags = torch.tensor([0.0, float(self._stop_signal or 0), float(len(new))], dtype=torch.float64)
        flags = flags.to(self.device)
        flags[0] = loss_sum.double()
        if self.dist.distributed:
            import torch.distributed as dist

            dist.all_reduce(flags)
            flags[0] /= self.dist.world_size
        if flags[2] > 0:
            self._merge_failures(all_gather_objects(new))
        loss_value = float(flags[0])
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            where = f"{self._last_ckpt}" if self._last_ckpt else "none written yet"
            raise DivergenceError(
                f"training diverged: loss is {loss_value} at iteration {self.iteration + 1} (lr {lr:.3g}, amp "
                f"{r.amp}); the update was not applied. Last good checkpoint: {where}. Lower optim.lr, use "
                f"run.amp=bf16/none instead of fp16, or set optim.clip_grad."
            )
        if o.clip_grad:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        return loss_value, int(flags[1]) != 0

    def _start(self, resume_state: dict[str, Any] | None) -> _Metrics:
        main = self.dist.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / "config.yaml")
            atomic_write_text(self.run_dir / "classes.txt", "".join(f"{c}\n" for c in self.classes))
            if self.skipped:
                self._write_skipped()
        r = self.cfg.run
        metrics = _Metrics(self.run_dir, main, r.tensorboard, self.iteration if resume_state is not None else None)
        if main and resume_state is not None:
            log.info("resumed from %s at iteration %d", self._last_ckpt, self.iteration)
            for key, (old, new) in self.resume_changes.items():
                log.info("resume: %s changed from %r to %r", key, old, new)
        return metrics

    def _log(self, loss: float, metrics: _Metrics, bar: Any, speed: _Throughput) -> None:
        if self.iteration % self.cfg.run.log_every and self.iteration != self.cfg.optim.iterations:
            return
        lr = self.optimizer.param_groups[0]["lr"]
        rec = {
            "iteration": self.iteration,
            "loss": loss,
            "lr": lr,
            "clips_per_s": speed(self.iteration),
            "epoch": self.epoch,
            "skipped_videos": len(self.skipped),
        }
        metrics.write(rec)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2g}", clips_s=f"{rec['clips_per_s']:.1f}")

    def _maybe_validate(self, metrics: _Metrics, bar: Any, speed: _Throughput) -> dict[str, Any] | None:
        every = self.cfg.run.val_every
        if self.val_samples is None or not every or self.iteration % every:
            return None
        val = self._validate()
        metrics.write({"iteration": self.iteration, **{f"val/{k}": v for k, v in val.items()}})
        if self.dist.is_main:
            bar.write(f"iteration {self.iteration}: validation video hit@1 {val['video_hit@1']:.4f}")
        speed.restart(self.iteration)  # clips/s: training only
        return val

    def fit(self) -> TrainResult:
        """Run (or resume) training to ``optim.iterations``; returns how it ended.  Holds the run folder's lock
        throughout; a failed write raises :class:`~p3d.errors.StorageError` saying which checkpoint is intact."""
        with self._own_run_folder():
            try:
                return self._fit()
            except StorageError as e:
                if e.kept is None:
                    e.kept = f"the last good checkpoint {self._last_ckpt}" if self._last_ckpt else "no checkpoint yet"
                raise

    def _fit(self) -> TrainResult:
        from tqdm import tqdm

        resume_state = self._setup()
        o, r = self.cfg.optim, self.cfg.run
        metrics = self._start(resume_state)
        clips_per_step = o.batch_size * o.accum_steps * self.dist.world_size
        bar = tqdm(total=o.iterations, initial=self.iteration, disable=not (self.dist.is_main and r.progress),
                   unit="it", dynamic_ncols=True, desc="train")  # fmt: skip
        self.net.train()
        batches = self._batches()
        speed = _Throughput(self.iteration, clips_per_step)
        start_iteration, t_start = self.iteration, time.perf_counter()
        last_val: dict[str, Any] = {}
        status, result_signal = "completed", None
        try:
            with self._stop:
                while self.iteration < o.iterations:
                    loss, stopping = self._step(batches)
                    bar.update(1)
                    self._log(loss, metrics, bar, speed)
                    last_val = self._maybe_validate(metrics, bar, speed) or last_val
                    if stopping:
                        status, result_signal = "stopped", self._stop_signal or int(signal.SIGTERM)
                        self.save()
                        break
                    if r.ckpt_every and self.iteration % r.ckpt_every == 0 and self.iteration < o.iterations:
                        self.save()
                        speed.restart(self.iteration)
                if status == "completed":
                    self.save()
        finally:
            bar.close()
            metrics.close()
            release_memory()
        seconds = time.perf_counter() - t_start
        self._check_ranks_in_sync()
        if self.dist.is_main and status == "completed":
            self._export()
        done = self.iteration - start_iteration
        return TrainResult(
            status=status,
            iteration=self.iteration,
            run_dir=self.run_dir,
            checkpoint=self._last_ckpt,
            signal=result_signal,
            metrics=last_val,
            seconds=seconds,
            clips_per_s=done * clips_per_step / seconds if seconds > 0 else float("nan"),
        )

    def _check_ranks_in_sync(self) -> None:
        """Under DDP every rank must hold the same parameters; a difference means a broken setup."""
        if not self.dist.distributed:
            return
        with torch.no_grad():
            total = sum(float(p.double().sum()) for p in self.model.parameters())
        sums = all_gather_objects(total)
        if max(sums) != min(sums):
            raise RuntimeError(f"ranks hold different weights after training (parameter sums {sums})")

    def _export(self) -> None:
        """The final weights as a self-describing ``model.safetensors`` (loads with ``create_model(...,
        pretrained=PATH)``)."""
        from p3d.models.pretrained import save_pretrained

        try:
            self.model.pretrained_cfg = self.model.pretrained_cfg.replace(source=f"p3d train ({self.run_dir})")
            save_pretrained(self.model, self.run_dir / "model.safetensors", iteration=self.iteration)
        except (ValueError, OSError) as e:
            log.warning("could not export model.safetensors: %s", e)
