"""Small file helpers used everywhere: atomic writes and SHA-256 checksums.

Every file p3d writes that a later step reads (checkpoints, feature parts, configs, reports, plots, weights) is
written through :func:`atomic_write_bytes` or :func:`atomic_path`: to a temporary name in the same directory,
flushed and ``fsync``'d, then renamed over the final name with ``os.replace`` (atomic on POSIX), and the directory
is ``fsync``'d.  A crash or a kill at any moment leaves the previous file or the new one, never a half-written one.

Storage failures (read-only folder, full disk, quota) are raised as :class:`~p3d.errors.StorageError`, one line
naming the path and the reason, and the temporary file is removed.

One owner per output: :class:`OutputLock` makes the process that writes a run folder or a feature store its only
writer (an OS advisory lock that the kernel releases when the process ends, however it ends).
:func:`tensor_digest` is the checksum that feature parts and checkpoints record of their tensors.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from p3d.errors import OutputLockedError, StorageError

log = logging.getLogger(__name__)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_path",
    "sha256_file",
    "sha256_bytes",
    "check_writable",
    "read_text",
    "storage_error",
    "OutputLock",
    "lock_holder",
    "tensor_digest",
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
    return StorageError(path, f"{doing} failed: {reason}", bad_path=e.errno in (errno.EISDIR, errno.ENOTDIR))


def _tmp_name(path: Path) -> Path:
    # pid + random: two writers of one path (threads, or processes on a shared filesystem) never share a temp file;
    # the suffix stays last, for writers that pick the format by extension
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


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
    tmp = _tmp_name(path)
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
    if folder.exists() and not folder.is_dir():  # the user named a file: bad input, not a failed write
        raise StorageError(folder, "exists and is not a folder", bad_path=True)
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


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line errors."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def read_p3d_safetensors(
    path: str | os.PathLike[str], fmt: str, what: str, version: int | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """``(header, arrays)`` of a small p3d safetensors file (an encoder, a PCA) whose header says
    ``format=fmt``; ``version``: the newest format version this p3d reads.  One-line errors naming the file and
    ``what`` it should be (missing, unreadable, another format, a newer version)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such {what}")
    try:
        with safe_open(str(p), framework="np") as f:
            md = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{p}: not a readable safetensors file ({one_line(e)})") from None
    if md.get("format") != fmt:
        raise ValueError(f"{p}: not a p3d {what} (metadata format={md.get('format')!r})")
    if version is not None:
        try:
            found = int(md.get("version", ""))
        except ValueError:
            raise ValueError(f"{p}: invalid {what} format version {md.get('version')!r}") from None
        if found > version:
            raise ValueError(f"{p}: {what} format version {found} is newer than this p3d ({version})")
    return md, arrays


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


# ------------------------------------------------------------------------------------------------ one owner
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def _holder_text(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "another process (its pid is not recorded yet)"
    me = " (this process)" if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname() else ""
    since = f", since {info['since']}" if info.get("since") else ""
    cmd = f", {info['command']}" if info.get("command") else ""
    return f"pid {info.get('pid')} on host {info.get('host')}{me}{cmd}{since}"


class OutputLock:
    """This process is the one writer of ``folder``: an exclusive ``fcntl.flock`` on ``folder/name``.

    The kernel drops the lock when the process ends (exit, crash, SIGKILL), so a lock is never stale and there is
    nothing to clean up.  The lock file holds the holder's pid, host, command and start time (JSON), which the
    refusal of a second writer quotes: :class:`~p3d.errors.OutputLockedError`, raised at once.  Two locks on one
    folder conflict even within one process.  The lock file is never replaced or removed (a new inode would be a
    second, independent lock).  On a file system without ``flock`` (some FUSE mounts) a warning is logged and the
    writer goes ahead unlocked; on NFS, Linux maps ``flock`` onto NFS byte-range locks, which hold across hosts.
    A child forked while the lock is held (a DataLoader worker) shares it until it exits too.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.  ``what`` names the output in messages.
    """

    def __init__(self, folder: str | os.PathLike[str], name: str = ".p3d-lock", what: str = "this output") -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        import fcntl

        if self._fd is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise storage_error(self.path, e, "creating the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{self.folder}: {self.what} is being written by {_holder_text(holder)}; a second writer would mix "
                f"or overwrite its work. Wait for it to end, stop it, or write elsewhere"
            ) from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise storage_error(self.path, e, "locking") from None
            log.warning("%s: the file system cannot lock files (%s); writing without a lock", self.path, e.strerror)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))[:300],
            "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError as e:
            os.close(fd)
            raise storage_error(self.path, e) from None
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file releases it; the file stays, see the class docstring)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a writer dropped without close() (or a dead one's object) frees its output
        self.release()


def lock_holder(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Who holds the :class:`OutputLock` file ``path`` now (its record: pid, host, command, since), or None when
    nobody does.  Probes with a shared lock, which never blocks or disturbs the holder."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(fd) or {"pid": None, "host": None}
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def _read_holder(fd: int, patience: float = 1.0) -> dict[str, Any] | None:
    """The holder's record; it writes it just after locking, so an empty or partial record is re-read for up to
    ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode())
            if isinstance(info, dict) and "pid" in info:
                return info
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


# ------------------------------------------------------------------------------------------------ checksums
def tensor_digest(obj: Any) -> str:
    """Hex SHA-256 of a nested structure of tensors and plain values, independent of how it was serialised.

    ``obj``: mappings (keys in sorted order), lists/tuples (the same), torch tensors and NumPy arrays (dtype, shape
    and raw bytes), str/int/float/bool/None/bytes.  A changed value, dtype, shape, key or byte changes the digest.
    Feature parts record it over their tensors and header fields, training checkpoints over their whole state."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, x: Any) -> None:
    import numpy as np

    if isinstance(x, Mapping):
        items = sorted(x.items(), key=lambda kv: repr(kv[0]))
        h.update(b"{%d;" % len(items))
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(x, (list, tuple)):
        h.update(b"[%d;" % len(x))
        for v in x:
            _feed(h, v)
    elif x is None or isinstance(x, (str, int, float, bool)):
        r = f"{type(x).__name__}:{x!r}".encode()
        h.update(b"s%d;" % len(r) + r)
    elif isinstance(x, bytes):
        h.update(b"b%d;" % len(x) + x)
    elif isinstance(x, (np.ndarray, np.generic)):
        a = np.ascontiguousarray(x)
        h.update(f"a{a.dtype.str}{a.shape};".encode())
        h.update(a.reshape(-1).view(np.uint8))
    elif type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        import torch

        t = x.detach().cpu().contiguous().reshape(-1)
        h.update(f"t{t.dtype}{tuple(x.shape)};".encode())
        h.update(t.view(torch.uint8).numpy())
    else:
        raise TypeError(f"tensor_digest: cannot checksum a {type(x).__name__}")
