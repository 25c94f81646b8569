"""DataLoader construction for clip datasets: workers, pinned memory, persistent workers, prefetch, seeds.

Decoding is CPU work in worker processes; each worker decodes with one FFmpeg thread and one torch thread
(the workers are the parallelism).  ``pin_memory`` defaults to "CUDA is available" so host-to-device copies
can overlap compute (``.to(device, non_blocking=True)``).  Shuffling uses a ``torch.Generator`` seeded from
``seed``; the datasets' own randomness is a pure function of ``(seed, epoch, index)``, so results do not
depend on which worker loads an item.

Feeding a GPU: a fixed worker count either starves the model or wastes cores, so :func:`plan_loader` sizes the
loader from two measured rates — the model's items/s and one worker's decode items/s (:func:`probe_decode_rate`) —
as ``workers = ceil(headroom · model / decode)`` capped by the cores, and a prefetch depth that keeps a few model
batches queued within the shared-memory budget.  :func:`p3d.representation.extract.extract_features` does this on
CUDA when no worker count is given; on CPU the default stays :func:`default_num_workers`.

Public API::

    build_loader(dataset, batch_size, *, train, num_workers=2, seed=0, ...) -> DataLoader
    # yields (clips (N, C, T, H, W) float32, labels (N,) int64 | (N, K) float32) for ClipDataset
    probe_decode_rate(dataset, max_items=3, max_seconds=2.0) -> float        # items/s of one worker
    plan_loader(model_rate, decode_rate, *, items_per_batch, item_bytes=...) -> LoaderPlan
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import time
from dataclasses import asdict, dataclass

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
    cores = _cores()
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return max(0, cores - torch.get_num_threads())
    return max(1, cores - 1)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def shared_memory_free(path: str = "/dev/shm") -> int | None:
    """Free bytes of the shared-memory filesystem that DataLoader workers hand their tensors through (containers
    often mount only 64 MiB there); ``None`` where there is none (not Linux)."""
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


@dataclass(frozen=True)
class LoaderPlan:
    """How many decoding workers and how deep a prefetch queue, and the rates they were derived from.

    ``model_rate`` and ``decode_rate`` are items per second (an item is whatever the dataset yields: one video's
    clips for extraction); ``decode_rate`` is one worker's.  ``limit`` names what bounded the worker count:
    ``"rate"`` (enough workers to outpace the model), ``"cores"`` or ``"memory"`` (the queue's shared memory).
    """

    workers: int
    prefetch_factor: int
    model_rate: float
    decode_rate: float
    limit: str

    @property
    def decode_capacity(self) -> float:
        """Items/s the planned workers decode together (assuming linear scaling)."""
        return self.workers * self.decode_rate

    def as_dict(self) -> dict:
        return {**asdict(self), "decode_capacity": self.decode_capacity}

    def describe(self) -> str:
        return (
            f"{self.workers} decoding worker(s), prefetch {self.prefetch_factor} (model {self.model_rate:.2f} items/s, "
            f"decode {self.decode_rate:.2f} items/s per worker; bounded by {self.limit})"
        )


def plan_loader(
    model_rate: float,
    decode_rate: float,
    *,
    items_per_batch: float = 1.0,
    item_bytes: int | None = None,
    cores: int | None = None,
    reserve: int = 1,
    headroom: float = 1.25,
    batches_ahead: int = 2,
    memory_budget: int | None = None,
) -> LoaderPlan:
    """Worker count and prefetch depth that keep a model fed, from measured rates (items/s).

    ``workers = ceil(headroom · model_rate / decode_rate)``, at least 1 and at most ``cores - reserve`` (the main
    process needs its core to launch the model and copy batches); ``headroom`` covers imperfect scaling across
    workers and jitter.  Each worker then keeps ``prefetch_factor`` items ready so that the queue holds
    ``batches_ahead`` model batches of ``items_per_batch`` items (at least 2 per worker), unless the queue would
    exceed ``memory_budget`` bytes (default: 2 GiB or half the free shared memory, whichever is smaller) of
    ``item_bytes`` items: then the prefetch depth, and if need be the worker count, shrink to fit.
    """
    if not (model_rate > 0 and decode_rate > 0 and math.isfinite(model_rate) and math.isfinite(decode_rate)):
        raise ValueError(f"plan_loader needs positive finite rates, got model {model_rate}, decode {decode_rate}")
    if items_per_batch <= 0 or headroom <= 0 or batches_ahead < 1 or reserve < 0:
        raise ValueError(
            f"bad plan_loader arguments: items_per_batch={items_per_batch}, headroom={headroom}, "
            f"batches_ahead={batches_ahead}, reserve={reserve}"
        )
    cores = _cores() if cores is None else int(cores)
    cap = max(1, cores - reserve)
    want = max(1, math.ceil(headroom * model_rate / decode_rate - 1e-9))
    workers, limit = (want, "rate") if want <= cap else (cap, "cores")
    prefetch = max(2, math.ceil(batches_ahead * items_per_batch / workers))
    if item_bytes:
        if memory_budget is None:
            shm = shared_memory_free()
            memory_budget = min(2 * 2**30, shm // 2) if shm is not None else 2 * 2**30
        fit = int(memory_budget // item_bytes)  # items the queue may hold
        if workers * prefetch > fit:
            if fit < workers:
                workers, limit = max(1, fit), "memory"
            prefetch = max(1, min(prefetch, fit // workers))
    return LoaderPlan(workers, prefetch, float(model_rate), float(decode_rate), limit)


def probe_decode_rate(dataset: Dataset, *, max_items: int = 3, max_seconds: float = 2.0, start: int = 0) -> float:
    """Items per second one decoding worker delivers: ``dataset[i]`` timed in this process with one torch thread
    (as :func:`worker_init` sets up a worker), for up to ``max_items`` items or ``max_seconds``.  Items a dict
    dataset marks ``valid=False`` (unreadable videos) are not counted; raises ``ValueError`` when none was readable.
    """
    n = len(dataset)
    if n == 0 or max_items < 1:
        raise ValueError(f"probe_decode_rate needs a non-empty dataset and max_items >= 1 (got {n}, {max_items})")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds, good = 0.0, 0
    try:
        for i in range(start, min(n, start + max_items)):
            t0 = time.perf_counter()
            item = dataset[i]
            dt = time.perf_counter() - t0
            if not (isinstance(item, dict) and not item.get("valid", True)):
                seconds += dt
                good += 1
            if seconds >= max_seconds:
                break
    finally:
        torch.set_num_threads(threads)
    if good == 0 or seconds <= 0:
        raise ValueError("probe_decode_rate: no readable item among the probed ones")
    return good / seconds


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
