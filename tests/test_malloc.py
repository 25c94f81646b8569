"""glibc malloc tuned in-process (p3d.malloc): applied on first model use, skipped when it must be, memory given
back on request, and no re-exec of the CLI.

Each check runs in a fresh interpreter (the tuning is process-wide and happens once), with the environment it
needs.  Where the tuning's effect is checked, it is read from glibc itself: ``mallinfo2().hblkhd`` (bytes in
mmapped blocks) shows whether a 48 MiB block was served by ``mmap`` (untuned glibc: its dynamic threshold is at
most 32 MiB) or from the heap (tuned), and RSS from ``/proc/self/statm``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import p3d
from p3d import malloc

SRC = str(Path(p3d.__file__).resolve().parent.parent)
MiB = 2**20

pytestmark = pytest.mark.skipif(malloc._libc()[0] is None, reason="glibc only")

# Shared by the child scripts: mallinfo2 (glibc >= 2.33), RSS, a block of n bytes from glibc's malloc.
PRELUDE = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc.mallinfo2.restype = MallInfo2

def mmapped():
    return libc.mallinfo2().hblkhd

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def where(n):
    '''"mmap" or "heap": where glibc put a block of n bytes.'''
    before = mmapped()
    p = libc.malloc(n)
    placed = "mmap" if mmapped() - before >= n else "heap"
    libc.free(p)
    return placed

def report(**kw):
    from p3d import malloc
    print("RESULT " + json.dumps({**malloc.status().__dict__, **kw}), flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that tunes or replaces malloc, plus ``extra``."""
    drop = {"GLIBC_TUNABLES", "LD_PRELOAD", "P3D_NO_MALLOC_TUNE", *malloc.MALLOC_ENV}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _run(code: str, **env: str) -> dict:
    r = subprocess.run([sys.executable, "-c", PRELUDE + code], env=_env(**env), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    assert len(line) == 1, r.stdout
    return json.loads(line[0][7:])


def test_import_p3d_stays_untuned_the_model_api_tunes():
    res = _run(
        "import p3d\n"
        "from p3d import malloc\n"
        "first = malloc.status()\n"
        "untuned = where(48 << 20)\n"
        "p3d.list_models()\n"  # the lazy model API imports p3d.models
        "report(first=first.reason, untuned=untuned, tuned=where(48 << 20), keep=malloc.keep_bytes())\n"
    )
    assert res["first"].startswith("not tuned yet")
    assert res["untuned"] == "mmap"  # glibc's default: a 48 MiB block is mmapped (and re-faulted on each use)
    assert res["applied"] and res["glibc"]
    assert res["mmap_threshold"] == res["trim_threshold"] == res["keep"]
    assert res["tuned"] == "heap"


def test_keep_bytes_is_bounded():
    keep = malloc.keep_bytes()
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < keep <= min(2**31 - 1, total // 8)


def test_blocks_above_the_bound_are_still_mapped():
    res = _run(
        "from p3d import malloc\n"
        "lib, version = malloc._libc()\n"
        "s = malloc._apply(lib, 64 << 20, version)\n"
        "report(s=s.__dict__, below=where(48 << 20), above=where(80 << 20))\n"
    )
    assert res["s"]["applied"] and res["s"]["mmap_threshold"] == res["s"]["trim_threshold"] == 64 * MiB
    assert res["below"] == "heap" and res["above"] == "mmap"


@pytest.mark.parametrize("value, applied", [("1", False), ("yes", False), ("0", True), ("", True)])
def test_opt_out(value, applied):
    res = _run("from p3d import malloc\nmalloc.tune()\nreport(placed=where(48 << 20))\n", P3D_NO_MALLOC_TUNE=value)
    assert res["applied"] is applied
    assert res["placed"] == ("heap" if applied else "mmap")
    if not applied:
        assert "P3D_NO_MALLOC_TUNE" in res["reason"] and res["mmap_threshold"] is None


@pytest.mark.parametrize(
    "env, why",
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"}, "GLIBC_TUNABLES"),
        ({"GLIBC_TUNABLES": "glibc.pthread.mutex_spin_count=50:glibc.malloc.trim_threshold=1"}, "GLIBC_TUNABLES"),
        ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "MALLOC_TRIM_THRESHOLD_"),
        ({"LD_PRELOAD": "/nonexistent/libtcmalloc_minimal.so.4"}, "LD_PRELOAD"),
        ({"LD_PRELOAD": "/a/libfoo.so /b/libjemalloc.so.2"}, "libjemalloc.so.2"),
    ],
)
def test_skipped_when_the_user_tuned_or_replaced_malloc(env, why):
    res = _run("from p3d import malloc\nmalloc.tune()\nreport()\n", **env)
    assert not res["applied"] and why in res["reason"], res
    assert res["mmap_threshold"] is None and res["trim_threshold"] is None


def test_other_tunables_do_not_stop_it():
    res = _run("from p3d import malloc\nmalloc.tune()\nreport()\n", GLIBC_TUNABLES="glibc.pthread.mutex_spin_count=50")
    assert res["applied"], res


def test_skipped_when_another_allocator_is_mapped(tmp_path):
    """A library named like mimalloc loaded in the process (here a copy of a harmless extension module)."""
    import _json

    fake = tmp_path / "libmimalloc.so.2"
    shutil.copy(_json.__file__, fake)
    res = _run(
        f"ctypes.CDLL({str(fake)!r})\n"
        "from p3d import malloc\n"
        "malloc.tune()\n"
        "report(placed=where(48 << 20), released=malloc.release_memory())\n"
    )
    assert not res["applied"] and str(fake) in res["reason"]
    assert res["placed"] == "mmap"
    assert res["released"] is False  # glibc's heap is not the allocator to trim


def test_old_glibc_path_turns_mmap_off():
    """glibc < 2.35 rejects mmap thresholds above 32 MiB; there M_MMAP_MAX = 0 keeps large blocks in the heap."""
    res = _run(
        "from p3d import malloc\n"
        "lib, version = malloc._libc()\n"
        "s = malloc._apply(lib, 256 << 20, version, mmap_off=True)\n"
        "report(s=s.__dict__, placed=where(48 << 20))\n"
    )
    assert res["s"]["applied"] and res["s"]["mmap_max"] == 0 and res["s"]["mmap_threshold"] is None
    assert res["placed"] == "heap"


@pytest.mark.parametrize("pinned", [False, True])
def test_release_memory_gives_freed_heap_back(pinned):
    """A freed large block stays resident (the next forward reuses it without page faults) until release_memory.

    Unpinned, it is freed at the heap's top, which untuned glibc trims at once (the trim threshold is what keeps
    it); pinned below a live block, it is a hole no trim threshold returns, only ``malloc_trim``.
    """
    res = _run(
        "from p3d import malloc\n"
        "malloc.tune()\n"
        "n = min(256 << 20, malloc.keep_bytes() // 2)\n"
        "r0 = rss()\n"
        "big = libc.malloc(n)\n"
        "ctypes.memset(big, 1, n)\n"
        f"pin = libc.malloc(1 << 20) if {pinned} else 0\n"
        "r1 = rss()\n"
        "libc.free(big)\n"
        "r2 = rss()\n"
        "released = malloc.release_memory()\n"
        "r3 = rss()\n"
        "report(n=n, grown=r1 - r0, after_free=r2 - r0, after_release=r3 - r0, released=released, above=pin > big)\n"
    )
    n = res["n"]
    assert res["applied"] and res["grown"] >= 0.9 * n
    assert res["above"] is pinned  # the pin really sits above the block
    assert res["after_free"] >= 0.9 * n, res
    assert res["released"] is True
    assert res["after_release"] <= 0.1 * n, res  # given back to the OS


def test_release_memory_elsewhere_is_a_no_op(monkeypatch):
    monkeypatch.setattr(malloc, "_status", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    s = malloc.tune()
    assert not s.applied and "not glibc" in s.reason and s.glibc == ""
    assert malloc.release_memory() is False


def test_cli_runs_as_one_process():
    """``p3d --help`` must not re-execute itself: an exec would run this script a second time (START twice) and
    raise the ``os.exec`` audit event."""
    code = (
        "import os, sys\n"
        "print('START', os.getpid(), flush=True)\n"
        "sys.addaudithook(lambda e, a: e in ('os.exec', 'os.posix_spawn') and print('EXEC', e, flush=True))\n"
        "sys.argv = ['p3d', '--help']\n"
        "from p3d.cli import main\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("START") == 1 and "EXEC" not in r.stdout, r.stdout
    assert "Pseudo-3D Residual Networks" in r.stdout
