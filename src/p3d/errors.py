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
