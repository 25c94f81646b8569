"""glibc malloc tuned in-process, so a script that does ``import p3d`` runs the models as fast as the ``p3d`` command.

Why: glibc serves every block above its mmap threshold (dynamic, at most ``DEFAULT_MMAP_THRESHOLD_MAX`` = 32 MiB
on 64-bit, glibc ``malloc/malloc.c``) with a fresh ``mmap`` and unmaps it on ``free``; P3D activations are
50-100 MB (res2 of a batch of 8 clips of 16×160×160: 105 MB), so every forward page-faults and zeroes all of them
again (P3D-63, batch 8: 291 000 page faults per forward, 1.4× the CPU time; BENCHMARKS.md, "Allocator tuned
in-process").  And a freed block at the top of the heap goes back to the OS as soon as the free top exceeds the trim
threshold (128 KiB by default).  The fix keeps such blocks in the heap (``mallopt`` through ctypes):

* ``M_MMAP_THRESHOLD`` = ``M_TRIM_THRESHOLD`` = :func:`keep_bytes` (an eighth of the memory, at most 2 GiB - 1,
  the largest value ``mallopt``'s ``int`` takes): blocks below it live in the heap, and the heap's free top is
  given back to the OS only when it grows past it.  So the process keeps at most that much free memory at the top
  of the heap; larger blocks are still mapped and unmapped, as before.  Both thresholds are needed (P3D-63
  forward, batch 8): the mmap threshold alone still leaves 57 % of the page faults (the free top is trimmed after
  each forward), a trim threshold with the 32 MiB mmap threshold 62 %.
* glibc before 2.35 rejects mmap thresholds above 32 MiB (``HEAP_MAX_SIZE / 2``; glibc bug 27801 removed the limit
  for ``mallopt`` and ``GLIBC_TUNABLES`` alike, which share ``do_set_mmap_threshold``), so there ``M_MMAP_MAX = 0``
  is set instead: the main heap serves every size (thread arenas still fall back to ``mmap`` for blocks above
  their 64 MiB heaps, and the main heap when ``brk`` fails).

:func:`tune` runs once, when :mod:`p3d.models` is first imported (``p3d.create_model`` imports it), so the CLI and
library users alike get it.  It does nothing when

* the C library is not glibc (``gnu_get_libc_version`` missing: musl, macOS, Windows);
* ``P3D_NO_MALLOC_TUNE`` is set (to anything but ``""``/``"0"``);
* another allocator is in use: ``LD_PRELOAD`` names tcmalloc/jemalloc/mimalloc, or such a library is mapped in the
  process (``/proc/self/maps``);
* the user tuned glibc malloc already: ``GLIBC_TUNABLES`` has ``glibc.malloc.`` entries, or a ``MALLOC_*_``
  variable (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``) is
  set.

Memory kept: freed heap blocks below the top (holes left by longer-lived blocks) are never returned by a trim
threshold.  :func:`release_memory` (``malloc_trim(0)``: the free top and every whole free page inside the heaps of
all arenas) hands all of it back; p3d calls it when a long job ends (feature extraction, ``Trainer.fit``,
``evaluate``), and a notebook can call it after anything else.  :func:`status` says what was applied, or why not.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass

__all__ = ["MallocStatus", "keep_bytes", "release_memory", "status", "tune"]

# mallopt parameter numbers, glibc malloc/malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

MAX_KEEP = 2**31 - 1  # mallopt takes an int
ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


@dataclass(frozen=True)
class MallocStatus:
    """What :func:`tune` did.

    Attributes:
        applied: the thresholds were set.
        reason: what was set, or why nothing was.
        glibc: the glibc version (``"2.36"``), ``""`` when the C library is not glibc.
        mmap_threshold, trim_threshold: bytes set with ``mallopt``, ``None`` when not set.
        mmap_max: ``0`` when glibc rejected the mmap threshold (before 2.35) and mmap was turned off instead.
    """

    applied: bool
    reason: str
    glibc: str = ""
    mmap_threshold: int | None = None
    trim_threshold: int | None = None
    mmap_max: int | None = None


NOT_YET = MallocStatus(False, "not tuned yet: p3d.malloc.tune() runs on the first import of p3d.models")
_status: MallocStatus | None = None


def _libc() -> tuple[ctypes.CDLL | None, str]:
    """The process's C library and its glibc version, or ``(None, "")`` when it is not glibc."""
    if not sys.platform.startswith("linux"):
        return None, ""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None, ""
    version.restype = ctypes.c_char_p
    return libc, version().decode()


def _foreign_allocator() -> str:
    """The preloaded or mapped tcmalloc/jemalloc/mimalloc library, ``""`` when there is none."""
    for lib in os.environ.get("LD_PRELOAD", "").replace(":", " ").split():
        if any(a in os.path.basename(lib) for a in ALLOCATORS):
            return f"LD_PRELOAD names another allocator: {lib}"
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[5:]
                if path and any(a in os.path.basename(path[0].strip()) for a in ALLOCATORS):
                    return f"another allocator is loaded: {path[0].strip()}"
    except OSError:
        pass
    return ""


def _user_tuned() -> str:
    """Which of the user's environment variables already tune glibc malloc, ``""`` when none."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(t.strip().startswith("glibc.malloc.") for t in tunables.split(":")):
        return f"GLIBC_TUNABLES sets malloc tunables ({tunables})"
    for name in MALLOC_ENV:
        if name in os.environ:
            return f"{name} is set"
    return ""


def keep_bytes() -> int:
    """Bytes glibc may keep free at the top of the heap (and the largest block it serves from the heap): an
    eighth of the physical memory or of the cgroup's limit, whichever is lower, at most 2 GiB - 1."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return min(MAX_KEEP, total // 8)


def _apply(libc: ctypes.CDLL, keep: int, glibc: str, mmap_off: bool = False) -> MallocStatus:
    """Set the trim threshold and the mmap threshold to ``keep`` bytes; turn mmap off where glibc rejects the
    threshold (or when ``mmap_off``: how glibc < 2.35 is tuned)."""
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if not libc.mallopt(M_TRIM_THRESHOLD, keep):
        return MallocStatus(False, f"mallopt(M_TRIM_THRESHOLD, {keep}) failed", glibc)
    if not mmap_off and libc.mallopt(M_MMAP_THRESHOLD, keep):
        return MallocStatus(True, f"mmap and trim thresholds set to {keep} bytes", glibc, keep, keep)
    libc.mallopt(M_MMAP_MAX, 0)
    return MallocStatus(True, f"trim threshold {keep} bytes, mmap off (glibc < 2.35)", glibc, None, keep, 0)


def tune() -> MallocStatus:
    """Tune glibc malloc for large, short-lived tensors (see the module docstring); once per process.

    Returns:
        the :class:`MallocStatus` (also kept for :func:`status`).
    """
    global _status
    if _status is not None:
        return _status
    libc, glibc = _libc()
    if os.environ.get("P3D_NO_MALLOC_TUNE", "") not in ("", "0"):
        why = "P3D_NO_MALLOC_TUNE is set"
    elif libc is None:
        why = "the C library is not glibc"
    else:
        why = _foreign_allocator() or _user_tuned()
    _status = MallocStatus(False, why, glibc) if why else _apply(libc, keep_bytes(), glibc)
    return _status


def status() -> MallocStatus:
    """What :func:`tune` applied in this process, or why it applied nothing (:data:`NOT_YET` before it ran)."""
    return _status or NOT_YET


def release_memory() -> bool:
    """Give the free memory of glibc's heaps back to the OS (``malloc_trim(0)``).

    Call it after a long job; p3d does at the end of feature extraction, training and evaluation.  Does nothing
    when the C library is not glibc or another allocator serves ``malloc``.

    Returns:
        True when memory was given back.
    """
    libc, _ = _libc()
    if libc is None or _foreign_allocator():
        return False
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return bool(libc.malloc_trim(0))
