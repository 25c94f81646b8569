"""Small file helpers used everywhere: atomic writes and SHA-256 checksums.

Every file p3d writes that a later step reads (checkpoints, feature parts, configs, reports, plots, weights) is
written through :func:`atomic_write_bytes` or :func:`atomic_path`: to a temporary name in the same directory,
flushed and ``fsync``'d, then renamed over the final name with ``os.replace`` (atomic on POSIX), and the directory
is ``fsync``'d.  A crash or a kill at any moment leaves the previous file or the new one, never a half-written one.

Storage failures (read-only folder, full disk, quota) are raised as :class:`~p3d.errors.StorageError`, one line
naming the path and the reason, and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from p3d.errors import StorageError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_path",
    "sha256_file",
    "sha256_bytes",
    "check_writable",
    "read_text",
]

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder",
}


def storage_error(path: str | os.PathLike[str], e: OSError, doing: str = "writing") -> StorageError:
    """A one-line :class:`StorageError` for an ``OSError`` raised while ``doing`` something to ``path``."""
    reason = _REASONS.get(e.errno or -1, e.strerror or str(e))
    return StorageError(path, f"{doing} failed: {reason}")


def _tmp_name(path: Path) -> Path:
    # pid + random: two writers of one path (threads, or processes on a shared filesystem) never share a temp file
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to (for writers that need a file name, e.g. matplotlib or
    PyAV); on a clean exit it is fsync'd and renamed over ``path``, on an error it is removed.  The temporary name
    keeps ``path``'s suffix so format detection by extension still works."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise storage_error(path.parent, e, "creating the folder") from None
    tmp = _tmp_name(path).with_suffix(path.suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise storage_error(path, e) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring); returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=indent) + "\n").encode())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's content, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before long work starts.

    Raises :class:`StorageError` naming the folder and the reason (read-only, permission, no space)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StorageError(folder, "exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _tmp_name(folder / ".p3d-write-check")
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise storage_error(folder, e, "writing") from None
    return folder


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """The text of a file the user named (a list, class index, config...): a missing file, a folder, an unreadable
    file or one that is not UTF-8 text is one line naming the path and ``what`` it should be."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, expected a {what}")
    try:
        return p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not a text {what} (byte {e.start} is not UTF-8; a binary file?)") from None
    except OSError as e:
        raise OSError(f"{p}: cannot read the {what}: {e.strerror or e}") from None
