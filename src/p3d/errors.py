"""Exception types shared across the package."""


class P3DError(Exception):
    """Base class of p3d's own errors."""


class VideoReadError(P3DError, ValueError):
    """A video file cannot be read. The message names the file and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightLoadError(P3DError, ValueError):
    """A weight file cannot be loaded into a model. The message names the file and the problem."""


class StorageError(P3DError, OSError):
    """Writing an output failed (read-only folder, full disk, quota). The message names the path and the reason,
    and ``kept`` (set by the code that knows) says what is intact, e.g. the last good checkpoint.  ``bad_path``:
    the path the user gave is the wrong kind (a file where a folder is needed, or the reverse): bad input, not a
    failure of the storage (the CLI exits 2 instead of 74)."""

    def __init__(self, path: object, reason: str, kept: str | None = None, bad_path: bool = False) -> None:
        self.path = str(path)
        self.reason = reason
        self.kept = kept
        self.bad_path = bad_path
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" + (f"; kept: {self.kept}" if self.kept else "")


class MemoryLimitError(P3DError, ValueError):
    """A run would need more memory than the machine has; raised before allocating, with the estimate and the
    limit (:func:`p3d.engine.memory.check_memory`)."""


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation failure (Python's MemoryError, torch's CPU allocator or CUDA out of memory),
    which says nothing about the input being processed and must never be reported as, e.g., an unreadable video."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


class OutputLockedError(P3DError, RuntimeError):
    """Another process is writing this output (run folder, feature store). The message names its pid and host."""


class IntegrityError(P3DError, ValueError):
    """A file's content does not match the checksum recorded when it was written (flipped bits, truncation, an
    edit). The message names the file (or part) and what differs."""


def missing_ids_error(missing: list[str], what: str, where: str, known: int, total: int | None = None) -> ValueError:
    """The one error for video ids of ``what`` (a list file, a split) that ``where`` (``known`` videos) lacks,
    naming at most 5 of them; ``total``: how many ids were asked for, when that helps."""
    shown = ", ".join(repr(m) for m in missing[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    of = f" of {total}" if total is not None else ""
    return ValueError(f"{len(missing)}{of} video id(s) of {what} are not in {where} ({known} videos): {shown}{more}")
