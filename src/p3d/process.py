"""This process's life: clean stops on signals, and dying with the launcher that started it.

* :class:`StopSignals` turns SIGTERM, SIGINT and SIGHUP into a *request to stop*: the long loops (training,
  extraction) finish the unit of work in hand, write what is computed (a checkpoint, the pending chunk of
  features) and return; the command then exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT).  A second
  SIGINT (Ctrl-C twice) aborts at once; a repeated SIGTERM does not (a launcher and a scheduler may both send one).
  Waits that may last (data that does not arrive) can be made :meth:`~StopSignals.interruptible`.
* :func:`follow_parent` (called for processes started by ``torchrun``) asks Linux to send SIGTERM to this process
  when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so a killed launcher never leaves workers training
  unattended; :func:`parent_alive` lets a loop poll the same thing on systems without ``prctl``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["StopRequested", "StopSignals", "follow_parent", "parent_alive"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_parent: int | None = None


class StopRequested(BaseException):  # noqa: N818 (a request, like KeyboardInterrupt, not an error)
    """A stop signal arrived inside :meth:`StopSignals.interruptible`; ``args[0]`` is the signal number."""


class StopSignals:
    """Within the ``with`` block, SIGTERM/SIGINT/SIGHUP set :attr:`signal` instead of killing the process.

    The loop checks :attr:`signal` between units of work.  ``on_signal(signum)`` runs once, on the first signal
    (e.g. to log it).  Signals the process was told to ignore (``nohup``, a background job's SIGINT) stay ignored.
    Signal handlers can be installed only in the main thread; elsewhere the block changes nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.signal: int | None = None
        self._on_signal = on_signal
        self._old: dict[int, object] = {}
        self._interruptible = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signal = signum
        if self._on_signal is not None:
            self._on_signal(signum)
        if self._interruptible:
            raise StopRequested(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """Within the block, a stop request (pending or arriving) raises :class:`StopRequested` at once instead of
        waiting for the loop to look: for a wait that may last, e.g. for the next item of a data loader whose
        video does not arrive.  Whatever the block was doing is abandoned."""
        if self.signal is not None:
            raise StopRequested(self.signal)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def request(self, signum: int) -> None:
        """Ask for a stop as if ``signum`` had arrived (e.g. when the launcher is found dead)."""
        self._handle(signum, None)

    @property
    def exit_status(self) -> int:
        """``128 + signal``, the shell's convention for a process ended by a signal (0 when none came)."""
        return 128 + int(self.signal) if self.signal else 0

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                if signal.getsignal(s) is not signal.SIG_IGN:
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old.clear()


def follow_parent(sig: int = signal.SIGTERM) -> None:
    """Receive ``sig`` when the parent process (the launcher) exits, however it exits (Linux); remember the
    parent for :func:`parent_alive` everywhere.  A parent that died before this call is noticed at once."""
    global _parent
    _parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except (OSError, AttributeError) as e:
            log.debug("prctl unavailable: %s", e)
    if os.getppid() != _parent:
        os.kill(os.getpid(), sig)


def parent_alive() -> bool:
    """False once the parent recorded by :func:`follow_parent` has exited (True when none is followed)."""
    return _parent is None or os.getppid() == _parent
