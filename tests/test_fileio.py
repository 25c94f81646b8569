"""The one atomic writer: complete files or none, and one clear line when storage fails."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from p3d.errors import StorageError
from p3d.fileio import atomic_path, atomic_write_bytes, atomic_write_json, check_writable, sha256_file


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    p = atomic_write_bytes(tmp_path / "a" / "b.bin", b"x" * 1000)
    atomic_write_json(p, {"k": [1, 2]})
    assert p.read_text() == '{\n "k": [\n  1,\n  2\n ]\n}\n'
    with atomic_path(tmp_path / "c.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path  # writers that pick a format by extension
        tmp.write_bytes(b"png")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a", "c.png"] and os.listdir(tmp_path / "a") == ["b.bin"]
    assert sha256_file(tmp_path / "c.png") == hashlib.sha256(b"png").hexdigest()


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only"),
                                         (errno.EDQUOT, "quota")])  # fmt: skip
def test_storage_failures_name_the_path_and_keep_the_old_file(tmp_path, monkeypatch, code, words):
    p = atomic_write_bytes(tmp_path / "f.json", b"old")

    def full(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError) as e:
        atomic_write_bytes(p, b"new")
    assert str(e.value).startswith(f"{p}: writing failed: ") and words in str(e.value)
    assert isinstance(e.value, OSError) and "\n" not in str(e.value)
    monkeypatch.undo()
    assert p.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.json"]


def test_check_writable_before_long_work(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "new" / "out").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="exists and is not a folder"):
        check_writable(tmp_path / "file")
    real_open = open

    def ro(path, *a, **k):
        if ".p3d-write-check" in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", ro)
    with pytest.raises(StorageError, match=r"out: writing failed: read-only file system"):
        check_writable(tmp_path / "new" / "out")
