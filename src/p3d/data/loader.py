"""DataLoader construction for clip datasets: workers, pinned memory, persistent workers, prefetch, seeds.

Decoding is CPU work in worker processes; each worker decodes with one FFmpeg thread and one torch thread
(the workers are the parallelism).  ``pin_memory`` defaults to "CUDA is available" so host-to-device copies
can overlap compute (``.to(device, non_blocking=True)``).  Shuffling uses a ``torch.Generator`` seeded from
``seed``; the datasets' own randomness is a pure function of ``(seed, epoch, index)``, so results do not
depend on which worker loads an item.

Public API::

    build_loader(dataset, batch_size, *, train, num_workers=2, seed=0, ...) -> DataLoader
    # yields (clips (N, C, T, H, W) float32, labels (N,) int64 | (N, K) float32) for ClipDataset
"""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def _stop_only_when_orphaned(signum: int, frame: object) -> None:
    if os.getppid() != _parent_pid:
        os._exit(128 + signum)


_parent_pid = os.getpid()


def worker_init(worker_id: int) -> None:
    """Per worker: one torch/FFmpeg thread, Python/NumPy seeds derived from torch's worker seed, and signals left to
    the main process: it decides how to stop (writing its checkpoint or pending features first), and a worker
    killed by the terminal's Ctrl-C or by a SIGTERM sent to the whole process group (torchrun's shutdown, some
    schedulers) would make the main process fail instead.  So SIGINT is ignored, and SIGTERM too while the main
    process lives; workers end when the loader shuts them down or the main process dies (PyTorch's watchdog)."""
    global _parent_pid
    _parent_pid = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_only_when_orphaned)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def default_num_workers(device: str | torch.device | None = None) -> int:
    """Decoding worker processes to use when none is given.

    On a GPU every core but the main process's decodes (at least 1).  On a CPU-only run the model's own threads
    (``torch.get_num_threads()``) already occupy the cores, and a decoding process competing with them costs more
    than it gives (measured in BENCHMARKS.md, "Data pipeline"), so only cores beyond torch's threads get workers —
    0 on a 2-core machine.  ``device=None`` means CUDA when it is available.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return max(0, cores - torch.get_num_threads())
    return max(1, cores - 1)


def _pin(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type == "cuda"


def build_loader(
    dataset: Dataset,
    batch_size: int | None,
    *,
    train: bool,
    num_workers: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    pin_memory: bool | None = None,
    prefetch_factor: int = 4,
    persistent_workers: bool = True,
    drop_last: bool | None = None,
    sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader set up so that decoding overlaps training.

    ``train=True`` shuffles (seeded) and drops the last incomplete batch; ``train=False`` keeps order.
    ``batch_size=None`` yields the dataset's items as they are (no collation: e.g. one video's clips per item).
    ``num_workers=None`` uses :func:`default_num_workers` for ``device``; 0 loads in the main process.  Each worker
    keeps ``prefetch_factor`` batches ready.  ``sampler`` (e.g. a ``DistributedSampler``) replaces shuffling.
    Memory is pinned when the batches go to a CUDA device.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = default_num_workers(device) if num_workers is None else int(num_workers)
    if workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {workers}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    kwargs: dict = {}
    if workers > 0:
        kwargs.update(
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            worker_init_fn=worker_init,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=_pin(device) if pin_memory is None else pin_memory,
        drop_last=(train and batch_size is not None) if drop_last is None else drop_last,
        generator=generator,
        **kwargs,
    )
