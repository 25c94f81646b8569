"""Distributed helpers: initialisation from ``torchrun``, a resumable sharded sampler, rank-0 writes, gathering.

``torchrun`` (``python -m torch.distributed.run``) sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins the process group with NCCL
on GPUs and gloo on CPU.  Without them everything runs as a single process (rank 0 of 1).  A process started
by torchrun follows its launcher (:func:`p3d.process.follow_parent`): if the launcher dies, even by SIGKILL, the
process receives SIGTERM and stops as on any SIGTERM (training writes its checkpoint, extraction its pending
chunk), so no worker trains on unattended.  See ``docs/distributed.md`` for multi-node, SLURM and Kubernetes use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistInfo",
    "pick_device",
    "init_distributed",
    "cleanup",
    "is_main",
    "barrier",
    "all_gather_objects",
    "all_reduce_mean",
    "ShardedSampler",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (this rank's GPU when CUDA is available, else the CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment, or return a single-process ``DistInfo``."""
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun: end with it
        from p3d.process import follow_parent

        follow_parent()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1:
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun (docs/distributed.md)")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def cleanup(sync: bool = False) -> None:
    """Leave the process group.  ``sync``: wait for every rank first (at the normal end of a run, where rank 0
    may still be writing the final weights), so that no rank tears its connections down while another still
    holds them; never after an error, where a rank may not arrive."""
    if dist.is_available() and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Mean of a scalar over ranks (the value itself without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


class ShardedSampler(Sampler[int]):
    """Seeded shuffling sharded over ranks, with a start position, so a resumed run sees the same batches.

    Epoch ``e``'s order is ``randperm(n)`` from a generator seeded with ``(seed, e)`` (or ``0..n-1`` without
    ``shuffle``), padded by repeating its head to a multiple of ``world_size``; rank ``r`` takes every
    ``world_size``-th index from ``r`` (as ``DistributedSampler``).  ``start`` skips the first ``start``
    indices of this rank's share — the batches a resumed run already consumed, without loading them.
    """

    def __init__(
        self,
        size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        pad: bool = True,
    ) -> None:
        if size < 1:
            raise ValueError("ShardedSampler needs a non-empty dataset")
        self.size = size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.seed = seed
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = int(start)

    @property
    def shard_size(self) -> int:
        if self.pad:
            return math.ceil(self.size / self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def order(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(int(self.seed) * 1_000_003 + self.epoch)
            idx = torch.randperm(self.size, generator=g).tolist()
        else:
            idx = list(range(self.size))
        if self.pad:
            total = self.shard_size * self.world_size
            while len(idx) < total:
                idx += idx[: total - len(idx)]
        return idx[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order()[self.start :])

    def __len__(self) -> int:
        return max(0, self.shard_size - self.start)
