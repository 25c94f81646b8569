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
    and ``kept`` (set by the code that knows) says what is intact, e.g. the last good checkpoint."""

    def __init__(self, path: object, reason: str, kept: str | None = None) -> None:
        self.path = str(path)
        self.reason = reason
        self.kept = kept
        super().__init__(f"{self.path}: {reason}")

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" + (f"; kept: {self.kept}" if self.kept else "")


class OutputLockedError(P3DError, RuntimeError):
    """Another process is writing this output (run folder, feature store). The message names its pid and host."""


class IntegrityError(P3DError, ValueError):
    """A file's content does not match the checksum recorded when it was written (flipped bits, truncation, an
    edit). The message names the file (or part) and what differs."""
