"""The feature store under hostile conditions: concurrent writers, a second writer, flipped bytes anywhere in a
part, old-format parts, non-finite features, a full disk."""

from __future__ import annotations

import errno
import os
import socket
import threading
import warnings

import numpy as np
import pytest

from p3d.errors import IntegrityError, OutputLockedError, StorageError
from p3d.representation.store import (
    FeatureWriter,
    _part_metadata,
    list_parts,
    read_features,
    verify_features,
)

META = {"model": "p3d63", "layers": ["pool5", "prob"], "input_spec": {"clip_len": 16}, "num_clips": 3, "flip": False}


def _video(i: int) -> dict[str, np.ndarray]:
    return {"pool5": np.full(8, i, np.float32) + np.arange(8) / 8, "prob": np.arange(3, dtype=np.float32) + i}


def _clips(i: int) -> dict[str, np.ndarray]:
    return {"pool5": np.full((2, 8), i, np.float32) + np.arange(2)[:, None], "prob": np.full((2, 3), i, np.float32)}


@pytest.mark.parametrize("flushes", [(1, 3), (2, 7), (5, 4)])
def test_concurrent_writers_bypassing_the_lock_never_lose_an_id(tmp_path, flushes):
    """Two writers of one rank at once (as on two hosts without working locks), different flush sizes, overlapping
    video lists: every id is there once, with its own numbers, and the copies are counted."""
    ids = [f"v{i:02d}" for i in range(23)]
    lists = [ids[:15], ids[8:]]  # v08..v14 done by both
    start, errors = threading.Barrier(2, timeout=60), []

    def write(videos, flush_every):
        try:
            start.wait()
            with FeatureWriter(tmp_path, META, flush_every=flush_every, lock=False) as w:
                for vid in videos:
                    w.add(vid, _video(int(vid[1:])), label=int(vid[1:]) % 3, clip=_clips(int(vid[1:])))
        except Exception as e:  # noqa: BLE001 (collected for the assertion)
            errors.append(e)

    threads = [threading.Thread(target=write, args=(v, f)) for v, f in zip(lists, flushes, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and not any(t.is_alive() for t in threads)
    names = [p.name for p in list_parts(tmp_path)]
    assert len(names) == sum(-(-len(v) // f) for v, f in zip(lists, flushes, strict=True))  # no part overwritten
    with pytest.warns(UserWarning, match="7 duplicate video id"):
        fs = read_features(tmp_path)
    assert sorted(fs.ids) == ids and fs.duplicates == 7
    for vid in ids:
        row = fs.rows([vid])[0]
        np.testing.assert_array_equal(fs.video["pool5"][row], _video(int(vid[1:]))["pool5"])
        np.testing.assert_array_equal(fs.clip["pool5"][fs.clip_video == row], _clips(int(vid[1:]))["pool5"])
    assert verify_features(tmp_path).duplicates == 7


def test_a_second_writer_of_a_rank_is_refused_other_ranks_are_not(tmp_path):
    with FeatureWriter(tmp_path, META, rank=0) as w0:
        with pytest.raises(OutputLockedError) as e:
            FeatureWriter(tmp_path, META, rank=0)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in str(e.value) and "rank 0" in str(e.value)
        with FeatureWriter(tmp_path, META, rank=1) as w1:  # a torchrun job's other rank
            w1.add("b", _video(1))
        w0.add("a", _video(0))
    with FeatureWriter(tmp_path, META, rank=0) as again:  # released on close
        assert again.done == {"a", "b"}


def _store(tmp_path, n=5, clips=True):
    store = tmp_path / "store"
    with FeatureWriter(store, META, flush_every=n + 1) as w:
        for i in range(n):
            w.add(f"cls/v{i}", _video(i), label=i % 2, clip=_clips(i) if clips else None)
        w.add_bad("cls/broken", "no video stream")
    (part,) = list_parts(store)
    return store, part


def _same(a, b) -> bool:
    return (
        a.ids == b.ids
        and np.array_equal(a.labels, b.labels)
        and a.bad == b.bad
        and a.meta == b.meta
        and a.video.keys() == b.video.keys()
        and all(np.array_equal(a.video[k], b.video[k]) for k in a.video)
        and all(np.array_equal(a.clip[k], b.clip[k]) for k in a.clip)
        and np.array_equal(a.clip_video, b.clip_video)
        and np.array_equal(a.clip_index, b.clip_index)
    )


@pytest.mark.parametrize("seed", [0])
def test_a_flipped_byte_anywhere_in_a_part_is_detected_and_named(tmp_path, seed):
    """Every byte of a part (length prefix, JSON header with the ids and the tensor index, tensor data), each
    changed by a random mask: one error naming the part, or provably no change (e.g. JSON whitespace) — never an
    IndexError and never different numbers.  Other seeds change the masks."""
    store, part = _store(tmp_path)
    good = read_features(part)
    original = part.read_bytes()
    masks = np.random.default_rng(seed).integers(1, 256, size=len(original))
    detected = 0
    fd = os.open(part, os.O_RDWR)
    try:
        for pos, mask in enumerate(masks):
            os.pwrite(fd, bytes([original[pos] ^ int(mask)]), pos)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    fs = read_features(part)
            except ValueError as e:  # IntegrityError, or "not a p3d feature file" when the format field changed
                assert part.name in str(e) and "\n" not in str(e), (pos, str(e))
                detected += 1
            else:
                assert _same(fs, good), f"byte {pos} changed the numbers silently"
            os.pwrite(fd, original[pos : pos + 1], pos)
    finally:
        os.close(fd)
    assert part.read_bytes() == original
    assert _same(read_features(store), read_features(part))
    assert detected > 0.95 * len(original)  # the few harmless ones: whitespace-like bytes of the JSON header


def test_verify_names_the_damaged_part_and_keeps_the_others(tmp_path):
    store = tmp_path / "s"
    with FeatureWriter(store, META, flush_every=2) as w:
        for i in range(6):
            w.add(f"v{i}", _video(i))
    parts = list_parts(store)
    data = bytearray(parts[1].read_bytes())
    data[-3] ^= 0x10  # a tensor byte
    parts[1].write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{parts[1].name}: damaged: its tensors or header differ"):
        read_features(store)
    check = verify_features(store)
    assert [p.status for p in check.parts] == ["intact", "damaged", "intact"] and not check.ok
    assert check.parts[0].videos == 2 and parts[1].name in check.parts[1].problem


def _old_part(store, name, ids, clip_video=None):
    """A part as p3d wrote it before writer ids and checksums."""
    from safetensors.numpy import save_file

    store.mkdir(exist_ok=True)
    tensors = {
        "video.pool5": np.stack([_video(i)["pool5"] for i in range(len(ids))]),
        "video.prob": np.ones((len(ids), 3), np.float32),
    }
    if clip_video is not None:
        m = len(clip_video)
        tensors["clip.pool5"], tensors["clip.prob"] = np.zeros((m, 8), np.float32), np.zeros((m, 3), np.float32)
        tensors["clip_video"], tensors["clip_index"] = np.asarray(clip_video, np.int64), np.zeros(m, np.int64)
    save_file(tensors, str(store / name), metadata=_part_metadata(META, ids, [()] * len(ids), {}))


def test_stores_of_older_p3d_still_read_and_resume(tmp_path):
    store = tmp_path / "old"
    _old_part(store, "part-r0000-000000.safetensors", ["a", "b"])
    (store / "meta.json").write_text('{"model": "p3d63"}')
    with FeatureWriter(store, META, flush_every=1) as w:
        assert w.done == {"a", "b"}
        w.add("c", _video(2))
    names = [p.name for p in list_parts(store)]
    assert names[0] == "part-r0000-000000.safetensors" and names[1].startswith("part-r0000-000001-")
    fs = read_features(store)
    assert fs.ids == ["a", "b", "c"]
    assert [p.status for p in verify_features(store).parts] == ["unverified", "intact"]


def test_an_unverified_part_with_inconsistent_rows_is_an_error_not_an_index_error(tmp_path):
    store = tmp_path / "old"
    _old_part(store, "part-r0000-000000.safetensors", ["a", "b"], clip_video=[0, 1, 7])
    with pytest.raises(IntegrityError, match="part-r0000-000000.safetensors: damaged: clip rows pointing outside"):
        read_features(store)


def test_non_finite_features_are_recorded_as_bad_never_written(tmp_path):
    with FeatureWriter(tmp_path, META) as w:
        assert w.add("ok", _video(0)) is None
        nan = _video(1)
        nan["prob"][1] = np.nan
        assert w.add("nan", nan) == "non-finite features (layer prob)"
        inf_clip = _clips(2)
        inf_clip["pool5"][0, 0] = np.inf
        assert w.add("inf", _video(2), clip=inf_clip) == "non-finite features (layer pool5)"
    fs = read_features(tmp_path)
    assert fs.ids == ["ok"] and fs.bad == {
        "nan": "non-finite features (layer prob)",
        "inf": "non-finite features (layer pool5)",
    }
    assert all(np.isfinite(v).all() for v in fs.video.values())


def test_a_full_disk_is_one_error_naming_the_part_and_earlier_parts_stay(tmp_path, monkeypatch):
    store = tmp_path / "s"
    w = FeatureWriter(store, META, flush_every=2)
    for i in range(2):
        w.add(f"v{i}", _video(i))
    real_replace = os.replace

    def full(src, dst):
        if "part-" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full)
    w.add("v2", _video(2))
    with pytest.raises(StorageError, match=r"part-r0000-000001-\w{8}\.safetensors: writing failed: no space left"):
        w.add("v3", _video(3))
    monkeypatch.undo()
    w.close()  # the chunk is still pending: written now that there is space
    assert read_features(store).ids == ["v0", "v1", "v2", "v3"]
    assert not [p for p in store.iterdir() if ".tmp-" in p.name]
