"""Helpers the benchmark scripts share (imported as ``_common``: a script's own folder is on ``sys.path``)."""

from __future__ import annotations

import resource


def cpu_seconds(children: bool = False) -> float:
    """CPU seconds (user + system, all threads) of this process, and of its finished children (DataLoader workers,
    child processes) if asked: a cost that other load on a shared machine disturbs less than wall-clock time."""
    who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))
