"""The feature file format: round trip, atomic parts, resume, rank sharding and merge, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p3d.features_io import (
    FeatureWriter,
    done_ids,
    list_parts,
    merge_features,
    read_features,
    write_features,
)

META = {"model": "p3d63", "layers": ["pool5", "prob"], "input_spec": {"clip_len": 16}, "num_clips": 3, "flip": False}


def _video(i: int) -> dict[str, np.ndarray]:
    return {"pool5": np.full(8, i, np.float32), "prob": np.arange(3, dtype=np.float32) + i}


def _clips(i: int) -> dict[str, np.ndarray]:
    return {"pool5": np.full((3, 8), i, np.float32) + np.arange(3)[:, None], "prob": np.full((3, 3), i, np.float32)}


def test_round_trip_parts_and_bad_videos(tmp_path):
    store = tmp_path / "feats"
    with FeatureWriter(store, META, flush_every=3) as w:
        for i in range(7):
            w.add(f"cls{i % 2}/v{i}", _video(i), label=i % 2, clip=_clips(i))
        w.add_bad("cls0/broken", "no video stream")
    assert len(list_parts(store)) == 3  # 3 + 3 + (1 video + 1 bad)
    fs = read_features(store)
    assert fs.ids == [f"cls{i % 2}/v{i}" for i in range(7)]
    np.testing.assert_array_equal(fs.labels, [i % 2 for i in range(7)])
    np.testing.assert_array_equal(fs.layer("pool5")[:, 0], np.arange(7))
    np.testing.assert_array_equal(fs.layer("prob")[5], [5, 6, 7])
    assert fs.bad == {"cls0/broken": "no video stream"}
    assert fs.meta["model"] == "p3d63" and json.loads((store / "meta.json").read_text()) == fs.meta
    # clip level: 3 clips per video, clip_video points at the right row
    assert fs.clip["pool5"].shape == (21, 8)
    np.testing.assert_array_equal(fs.clip_video, np.repeat(np.arange(7), 3))
    np.testing.assert_array_equal(fs.clip["pool5"][fs.clip_video == 4][:, 0], [4, 5, 6])
    np.testing.assert_array_equal(fs.clip_index, np.tile(np.arange(3), 7))


def test_resume_skips_done_and_kill_loses_only_the_pending_chunk(tmp_path):
    store = tmp_path / "feats"
    w = FeatureWriter(store, META, flush_every=4)
    for i in range(5):
        w.add(f"v{i}", _video(i))
    w.add_bad("v_bad", "corrupt")
    # simulated SIGKILL: no close(); the 5th video and the bad one are still in memory, plus a torn temp file
    (store / ".part-r0000-000009.safetensors.tmp-1234").write_bytes(b"half a file")
    del w
    assert done_ids(store) == {"v0", "v1", "v2", "v3"}
    w2 = FeatureWriter(store, META, flush_every=2)
    assert w2.done == {"v0", "v1", "v2", "v3"}
    todo = [f"v{i}" for i in range(6) if f"v{i}" not in w2.done]
    assert todo == ["v4", "v5"]
    with w2:
        for vid in todo:
            w2.add(vid, _video(int(vid[1:])))
    fs = read_features(store)
    assert sorted(fs.ids) == [f"v{i}" for i in range(6)]
    assert len(list_parts(store)) == 2  # part 0: v0-v3 from the killed run; part 1: v4, v5
    assert "v_bad" not in done_ids(store)  # its record was lost with the chunk: it is retried, not forgotten


def test_resume_refuses_different_model(tmp_path):
    FeatureWriter(tmp_path, META).close()
    with pytest.raises(ValueError, match="model: stored 'p3d63', requested 'resnet50_2d'"):
        FeatureWriter(tmp_path, {**META, "model": "resnet50_2d"})


def test_ranks_write_disjoint_parts_and_merge(tmp_path):
    store = tmp_path / "feats"
    ids = [f"v{i:02d}" for i in range(10)]
    for rank in (0, 1):
        with FeatureWriter(store, META, rank=rank, flush_every=2) as w:
            for i, vid in enumerate(ids):
                if i % 2 == rank:
                    w.add(vid, _video(i), label=i % 3)
            if rank == 1:
                w.add_bad("zz_bad", "unreadable")
    names = sorted(p.name for p in list_parts(store))
    assert any(n.startswith("part-r0000") for n in names) and any(n.startswith("part-r0001") for n in names)
    out = merge_features(store, tmp_path / "merged.safetensors")
    fs = read_features(out)
    assert fs.ids == ids  # sorted, interleaved ranks joined
    np.testing.assert_array_equal(fs.layer("pool5")[:, 0], np.arange(10))
    np.testing.assert_array_equal(fs.labels, np.arange(10) % 3)
    assert fs.bad == {"zz_bad": "unreadable"} and fs.meta == META


def test_merge_keeps_clip_rows_with_their_video(tmp_path):
    store = tmp_path / "feats"
    with FeatureWriter(store, META, rank=1) as w:
        w.add("b", _video(1), clip=_clips(1))
    with FeatureWriter(store, META, rank=0) as w:
        w.add("a", _video(0), clip=_clips(0))
    fs = read_features(merge_features(store, tmp_path / "m.safetensors"))
    assert fs.ids == ["a", "b"]
    np.testing.assert_array_equal(fs.clip["pool5"][fs.clip_video == 1][:, 0], [1, 2, 3])


def test_duplicates_warn_and_keep_first(tmp_path):
    with FeatureWriter(tmp_path, META, rank=0) as w:
        w.add("a", _video(0))
    with FeatureWriter(tmp_path, META, rank=1) as w:
        w.done.clear()  # a second concurrent run that did not see rank 0's part
        w.add("a", _video(9))
    with pytest.warns(UserWarning, match="1 duplicate"):
        fs = read_features(tmp_path)
    assert fs.ids == ["a"] and fs.layer("pool5")[0, 0] == 0


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such feature file"):
        read_features(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no feature parts"):
        read_features(tmp_path)
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a p3d feature file"):
        read_features(tmp_path / "other.safetensors")
    w = FeatureWriter(tmp_path / "s", META)
    w.add("a", _video(0))
    with pytest.raises(ValueError, match="'pool5' has 4 dimensions, earlier videos 8"):
        w.add("b", {"pool5": np.zeros(4), "prob": np.zeros(3)})
    with pytest.raises(ValueError, match="layers"):
        w.add("c", {"pool5": np.zeros(8)})
    fs = read_features(write_features(read_features(w.flush().parent), tmp_path / "one.safetensors"))
    with pytest.raises(ValueError, match="no layer 'res5c'"):
        fs.layer("res5c")
    with pytest.raises(ValueError, match="1 video id\\(s\\) of the list are not in"):
        fs.rows(["a", "nope"], "the list")
