"""The base layer of issue 10: one owner per output (OutputLock), checksums of tensors, storage failures as one line,
signals as clean stops, and processes that die with their launcher."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from p3d import fileio
from p3d.errors import OutputLockedError, StorageError
from p3d.fileio import OutputLock, atomic_write_bytes, check_writable, lock_holder, tensor_digest
from p3d.process import StopSignals

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True, **kw)


def _wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------------- OutputLock
def test_second_writer_is_refused_naming_the_holder_and_a_released_lock_is_free(tmp_path):
    first = OutputLock(tmp_path, what="this store").acquire()
    with pytest.raises(OutputLockedError) as e:
        OutputLock(tmp_path, what="this store").acquire()  # a second open file: conflicts even in one process
    msg = str(e.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()} (this process)" in msg and "\n" not in msg
    assert lock_holder(tmp_path / ".p3d-lock")["pid"] == os.getpid()
    first.release()
    assert lock_holder(tmp_path / ".p3d-lock") is None
    with OutputLock(tmp_path):  # free again; the lock file stays (never replaced, see OutputLock)
        assert (tmp_path / ".p3d-lock").is_file()


def test_lock_of_a_killed_process_is_never_stale(tmp_path):
    holder = _python(
        f"""
        import sys, time
        from p3d.fileio import OutputLock
        lock = OutputLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
        """,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid} on host {socket.gethostname()}"):
            OutputLock(tmp_path).acquire()
        holder.kill()  # SIGKILL: no clean-up code runs
        holder.wait(timeout=30)
        OutputLock(tmp_path).acquire().release()  # the kernel dropped the lock with the process
    finally:
        holder.kill()
        holder.wait(timeout=30)


# ----------------------------------------------------------------------------------------------- checksums
def test_tensor_digest_sees_every_value_dtype_shape_and_key():
    base = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": torch.arange(4), "meta": {"x": [1, "y", None]}}
    last_bit = base["a"].copy()
    last_bit[1, 1] = np.nextafter(last_bit[1, 1], np.float32(9))
    d = tensor_digest(base)
    assert d == tensor_digest({"meta": {"x": [1, "y", None]}, "b": torch.arange(4), "a": base["a"].copy()})  # order
    changed = [
        {**base, "a": last_bit},
        {**base, "a": base["a"].astype(np.float64)},
        {**base, "a": base["a"].reshape(3, 2)},
        {**base, "b": torch.arange(4, dtype=torch.int32)},
        {**base, "meta": {"x": [1, "y", 0]}},
        {**base, "meta": {"x": [1, "y"]}},
        {"A": base["a"], "b": base["b"], "meta": base["meta"]},
    ]
    assert len({d, *(tensor_digest(c) for c in changed)}) == len(changed) + 1
    with pytest.raises(TypeError, match="cannot checksum a object"):
        tensor_digest({"x": object()})


def test_concurrent_atomic_writes_of_one_file_never_collide(tmp_path):
    """Writers of the same file (two FeatureWriters creating one store's meta.json) each use their own temporary
    file: every write succeeds and the file is always one of them, whole."""
    import threading

    target, errors = tmp_path / "meta.json", []
    payloads = [bytes([65 + k]) * 5000 for k in range(4)]

    def write(data: bytes) -> None:
        try:
            for _ in range(50):
                atomic_write_bytes(target, data)
        except Exception as e:  # noqa: BLE001 (collected for the assertion)
            errors.append(e)

    threads = [threading.Thread(target=write, args=(d,)) for d in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_bytes() in payloads and os.listdir(tmp_path) == ["meta.json"]


# ---------------------------------------------------------------------------------------- storage failures
def _raise(err: int):
    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    return fail


@pytest.mark.parametrize(
    "err, reason", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"), (errno.EDQUOT, "quota")]
)
def test_storage_failures_are_one_line_naming_the_path_and_keep_the_old_file(tmp_path, monkeypatch, err, reason):
    target = tmp_path / "out" / "file.bin"
    atomic_write_bytes(target, b"old")
    monkeypatch.setattr(os, "replace", _raise(err))
    with pytest.raises(StorageError) as e:
        atomic_write_bytes(target, b"new")
    assert str(e.value).startswith(f"{target}: writing failed: ") and reason in str(e.value)
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]
    e.value.kept = "the previous file"
    assert str(e.value).endswith("; kept: the previous file")


def test_check_writable_fails_before_the_work(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "open", _raise(errno.EROFS), raising=False)  # as on a read-only mount
    with pytest.raises(StorageError, match=r"out: writing failed: read-only file system$"):
        check_writable(tmp_path / "out")
    monkeypatch.undo()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError, match="exists and is not a folder"):
        check_writable(tmp_path / "afile")
    assert check_writable(tmp_path / "ok") == tmp_path / "ok"


# ------------------------------------------------------------------------------------------------- signals
def test_signals_are_requests_to_stop_and_a_second_ctrl_c_aborts():
    seen = []
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals(on_signal=seen.append) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for(lambda: stop.signal is not None, 10, "the handler")
        os.kill(os.getpid(), signal.SIGTERM)  # a launcher and a scheduler may both send one: still a clean stop
        time.sleep(0)  # let the interpreter run the handler
        assert stop.signal == signal.SIGTERM and stop.exit_status == 143 and seen == [signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            _wait_for(lambda: False, 10, "the second SIGINT to raise")
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_process_following_its_parent_dies_with_it():
    """The torchrun case in miniature: launcher -> worker that calls follow_parent(); SIGKILL the launcher."""
    launcher = _python(
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "from p3d.process import follow_parent; follow_parent(); "
                                  "print('following', flush=True); import time; time.sleep(600)"],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "following"
        print(child.pid, flush=True)
        time.sleep(600)
        """,
        stdout=subprocess.PIPE,
    )
    try:
        worker = int(launcher.stdout.readline())
        assert _alive(worker)
        launcher.kill()
        launcher.wait(timeout=30)
        _wait_for(lambda: not _alive(worker), 30, f"worker {worker} to end with its launcher")
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
