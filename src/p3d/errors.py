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
    """Writing an output failed (read-only folder, full disk, quota). The message names the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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
