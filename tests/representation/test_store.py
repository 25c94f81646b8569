"""The feature file format: round trip, atomic parts, resume, rank sharding and merge, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p3d.representation.store import (
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


# ActivityNet-style untrimmed videos: several classes per video; prob scores chosen for a hand-computed mAP
_ANET = {
    "v0": ((0, 2), [0.9, 0.1, 0.5]),
    "v1": ((1,), [0.2, 0.8, 0.6]),
    "v2": ((0, 1), [0.4, 0.05, 0.1]),
    "v3": ((2,), [0.3, 0.3, 0.2]),
}


def _anet_store(store, rank_of=lambda vid: int(vid[1:]) % 2):
    writers = [FeatureWriter(store, META, rank=r, flush_every=1) for r in (0, 1)]
    for vid, (labs, prob) in _ANET.items():
        writers[rank_of(vid)].add(vid, {"pool5": np.full(8, float(vid[1:]), np.float32), "prob": prob}, label=labs)
    for w in writers:
        w.close()
    return store


def test_multi_label_store_round_trip_merge_and_map(tmp_path):
    from p3d.evaluation.svm import mean_average_precision, multi_hot, topk_accuracy

    store = _anet_store(tmp_path / "feats")
    fs = read_features(store)
    assert fs.ids == ["v0", "v2", "v1", "v3"]  # rank 0's parts, then rank 1's
    assert fs.multi_labels == [(0, 2), (0, 1), (1,), (2,)]
    np.testing.assert_array_equal(fs.labels, [0, 0, 1, 2])  # first label, as older readers see it
    # parts of single-label videos do not write the key: an older reader sees an unchanged single-label part
    headers = {p.name: _header(p) for p in list_parts(store)}
    assert sorted("multi_labels" in h for h in headers.values()) == [False, False, True, True]

    merged = merge_features(store, tmp_path / "merged.safetensors")  # both rank parts, sorted by id
    m = read_features(merged)
    assert m.ids == ["v0", "v1", "v2", "v3"]
    assert m.multi_labels == [_ANET[v][0] for v in m.ids]
    np.testing.assert_array_equal(m.labels, [0, 1, 0, 2])
    assert "multi_labels" in _header(merged)

    # ActivityNet mAP by hand (interpolated AP, the challenge's classification metric):
    #   class 0: ranking v0 .9, v2 .4, v3 .3, v1 .2; positives v0 v2 -> AP 1
    #   class 1: ranking v1 .8, v3 .3, v0 .1, v2 .05; positives v1 v2 -> precision 1 at recall 1/2, 2/4 at 1 -> .75
    #   class 2: ranking v1 .6, v0 .5, v3 .2, v2 .1; positives v0 v3 -> best precision 2/3 at both recalls -> 2/3
    scores = m.layer("prob")
    y = multi_hot(m.multi_labels, np.arange(3))
    assert mean_average_precision(scores, y) == pytest.approx((1 + 0.75 + 2 / 3) / 3)
    # the first label alone would miss v0 in class 2 and v2 in class 1: (1 + 1 + 1/3) / 3
    assert mean_average_precision(scores, m.labels) == pytest.approx((1 + 1 + 1 / 3) / 3)
    # top-1: v0 -> 0 (hit), v1 -> 1 (hit), v2 -> 0 (hit), v3 -> 0 on a tie (miss); v3's top 2 is still {0, 1}
    assert [topk_accuracy(scores, y, k) for k in (1, 2, 3)] == [0.75, 0.75, 1.0]
    # a hit on any true label: v1's top class 1 is the *second* label of (2, 1)
    assert topk_accuracy(scores[1:2], multi_hot([(2, 1)], np.arange(3)), 1) == 1.0


def test_single_label_store_has_no_multi_labels(tmp_path):
    store = tmp_path / "feats"
    with FeatureWriter(store, META) as w:
        w.add("a", _video(0), label=1)
        w.add("b", _video(1), label=(2,))  # a one-label tuple is a single label
        w.add("c", _video(2), label=-1)
        w.add("d", _video(3), label=())
    fs = read_features(store)
    assert fs.multi_labels is None
    np.testing.assert_array_equal(fs.labels, [1, 2, -1, -1])
    (part,) = list_parts(store)
    assert "multi_labels" not in _header(part) and json.loads(_header(part)["labels"]) == [1, 2, None, None]
    assert read_features(merge_features(store, tmp_path / "m.safetensors")).multi_labels is None
    with pytest.raises(ValueError, match="label must be"):
        FeatureWriter(tmp_path / "other", META).add("x", _video(0), label="Jump")


def _header(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        return f.metadata()
