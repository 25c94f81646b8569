import json

import pytest
import torch

from p3d.data import (
    ClipDataset,
    Sample,
    VideoClipsDataset,
    build_loader,
    build_samples,
    parse_manifest,
    write_manifest,
)
from p3d.spec import InputSpec

from .helpers import frame_index, make_frames, write

# Identity preprocessing on the videos' own size, so decoded content can be checked in the clips.
SPEC = InputSpec(clip_len=4, size=(48, 64), resize=(48, 64), scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)


def _clip_indices(clip: torch.Tensor) -> list[int]:
    """Frame indices carried by a (C, T, H, W) clip made with SPEC."""
    frames = clip.permute(1, 2, 3, 0).round().clamp(0, 255).to(torch.uint8).numpy()
    # undo a training flip: the marker sits top-left in the written frames
    return [frame_index(f[:, ::-1] if f[:4, -8:].mean() > f[:4, :8].mean() else f) for f in frames]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("v")
    return write(d / "v.mp4", make_frames(40), options={"g": "8"})


def _ucf_tree(tmp_path, video, crlf=True):
    nl = "\r\n" if crlf else "\n"
    root = tmp_path / "ucf"
    for cls in ("ApplyEyeMakeup", "HandstandPushups"):
        (root / "UCF-101" / cls).mkdir(parents=True)
    s = root / "ucfTrainTestlist"
    s.mkdir()
    (s / "classInd.txt").write_bytes(f"1 ApplyEyeMakeup{nl}2 HandStandPushups{nl}".encode())
    names = {
        "ApplyEyeMakeup": ["v_ApplyEyeMakeup_g08_c01.avi", "v_ApplyEyeMakeup_g01_c01.avi"],
        "HandstandPushups": ["v_HandStandPushups_g09_c01.avi", "v_HandStandPushups_g02_c01.avi"],
    }
    for cls, files in names.items():
        for f in files:
            (root / "UCF-101" / cls / f).write_bytes(video.read_bytes())
    train = [f"ApplyEyeMakeup/{names['ApplyEyeMakeup'][0]} 1", f"HandstandPushups/{names['HandstandPushups'][0]} 2"]
    (s / "trainlist01.txt").write_bytes("".join(x + nl for x in train).encode())
    (s / "testlist01.txt").write_bytes(
        f"ApplyEyeMakeup/{names['ApplyEyeMakeup'][1]}{nl}HandstandPushups/{names['HandstandPushups'][1]}{nl}".encode()
    )
    return root


def test_ucf101_split_files_with_crlf(tmp_path, video):
    root = _ucf_tree(tmp_path, video)
    train = build_samples("ucf101", root, split=1, subset="train")
    test = build_samples("ucf101", root, split=1, subset="test")
    assert train.classes == ["ApplyEyeMakeup", "HandStandPushups"]
    assert [s.label for s in train] == [0, 1] and [s.label for s in test] == [0, 1]
    assert all(s.path.endswith(".avi") and "\r" not in s.path for s in train.samples + test.samples)
    assert test[1].video_id == "v_HandStandPushups_g02_c01"
    assert not train.missing


def test_ucf101_label_disagreeing_with_folder_is_an_error(tmp_path, video):
    root = _ucf_tree(tmp_path, video, crlf=False)
    lst = root / "ucfTrainTestlist" / "trainlist01.txt"
    lst.write_text(lst.read_text().replace(" 2\n", " 1\n"))
    with pytest.raises(ValueError, match="disagrees"):
        build_samples("ucf101", root, subset="train")


def test_ucf101_finds_prepared_mp4_in_place_of_avi(tmp_path, video):
    root = _ucf_tree(tmp_path, video)
    for p in (root / "UCF-101").rglob("*.avi"):
        p.rename(p.with_suffix(".mp4"))
    train = build_samples("ucf101", root, subset="train")
    assert all(s.path.endswith(".mp4") for s in train)


def test_kinetics_csv_trimmed_and_full_files(tmp_path, video):
    root = tmp_path / "k"
    (root / "train" / "abseiling").mkdir(parents=True)
    (root / "train" / "abseiling" / "AAAAAAAAAAA_000010_000020.mp4").write_bytes(video.read_bytes())
    (root / "BBBBBBBBBBB.mkv").write_bytes(video.read_bytes())
    csv = tmp_path / "train.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\r\n"
        "abseiling,AAAAAAAAAAA,10,20,train\r\n"
        "zumba,BBBBBBBBBBB,0.4,1.0,train\r\n"
        "zumba,CCCCCCCCCCC,3,13,train\r\n"
        "abseiling,DDDDDDDDDDD,1,11,val\r\n"
    )
    sl = build_samples("kinetics", root, annotations=csv, split="train")
    assert sl.classes == ["abseiling", "zumba"]
    assert [(s.label, s.start, s.end) for s in sl] == [(0, None, None), (1, 0.4, 1.0)]
    assert sl.missing == ["CCCCCCCCCCC"]


def test_activitynet_json_untrimmed_multilabel_and_trimmed(tmp_path, video):
    root = tmp_path / "anet"
    root.mkdir()
    (root / "v_vid1.mp4").write_bytes(video.read_bytes())
    (root / "vid2.mp4").write_bytes(video.read_bytes())
    db = {
        "version": "1.3",
        "database": {
            "vid1": {"subset": "training", "duration": 1.6, "annotations": [
                {"segment": [0.2, 0.8], "label": "Surfing"}, {"segment": [1.0, 1.4], "label": "Diving"}]},
            "vid2": {"subset": "validation", "duration": 1.6, "annotations": [
                {"segment": [0.0, 1.0], "label": "Diving"}]},
            "vid3": {"subset": "training", "duration": 5, "annotations": [{"segment": [0, 1], "label": "Diving"}]},
        },
    }  # fmt: skip
    js = tmp_path / "anet.json"
    js.write_text(json.dumps(db))
    sl = build_samples("activitynet", root, annotations=js, subset="training")
    assert sl.classes == ["Diving", "Surfing"] and sl.multilabel
    assert len(sl) == 1 and sl[0].labels == (0, 1) and sl.missing == ["vid3"]
    tr = build_samples("activitynet", root, annotations=js, subset="training", trimmed=True)
    assert [(s.labels, s.start, s.end) for s in tr] == [((1,), 0.2, 0.8), ((0,), 1.0, 1.4)]
    ds = ClipDataset(sl, SPEC, seed=0)
    _, y = ds[0]
    assert y.tolist() == [1.0, 1.0]


def test_sports1m_list_multilabel(tmp_path, video):
    root = tmp_path / "s1m"
    root.mkdir()
    (root / "EEEEEEEEEEE.mp4").write_bytes(video.read_bytes())
    lst = tmp_path / "train_partition.txt"
    lst.write_text("https://www.youtube.com/watch?v=EEEEEEEEEEE 3,7\nhttps://www.youtube.com/watch?v=FFFFFFFFFFF 1\n")
    sl = build_samples("sports1m", root, annotations=lst)
    assert len(sl.classes) == 8 and sl.multilabel
    assert sl[0].labels == (3, 7) and sl.missing == ["https://www.youtube.com/watch?v=FFFFFFFFFFF"]


def test_folder_and_manifest_round_trip(tmp_path, video):
    root = tmp_path / "f"
    for cls in ("b_jump", "a_run"):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.mp4").write_bytes(video.read_bytes())
    (root / "a_run" / "notes.txt").write_text("not a video")
    sl = build_samples("folder", root)
    assert sl.classes == ["a_run", "b_jump"] and [s.label for s in sl] == [0, 1]
    write_manifest(sl, tmp_path / "m" / "manifest.csv")
    back = parse_manifest(tmp_path / "m" / "manifest.csv")
    assert back.classes == sl.classes and [s.path for s in back] == [s.path for s in sl]
    m2 = tmp_path / "m2.tsv"
    m2.write_text(f"# comment\n{video}\t2|0\t0.4\t0.8\n")
    s2 = parse_manifest(m2)
    assert s2[0].labels == (2, 0) and (s2[0].start, s2[0].end) == (0.4, 0.8) and s2.num_classes == 3
    with pytest.raises(ValueError, match="kind"):
        build_samples("hmdb", root)


def test_clip_dataset_segment_and_determinism(video):
    s = Sample(str(video), (0,), "v", start=0.4, end=1.0)  # 25 fps: frames 10..24
    ds = ClipDataset([s], SPEC, seed=3)
    starts = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        clip, label = ds[0]
        assert clip.shape == (3, 4, 48, 64) and label == 0
        idx = _clip_indices(clip)
        assert idx == list(range(idx[0], idx[0] + 4)) and 10 <= idx[0] and idx[-1] <= 24
        starts.add(idx[0])
    assert len(starts) > 2
    ds.set_epoch(2)
    again = ClipDataset([s], SPEC, seed=3)
    again.set_epoch(2)
    torch.testing.assert_close(ds[0][0], again[0][0])


def _marker_left(clip: torch.Tensor) -> bool:
    """True when the white top-left marker of make_frames is still on the left (the clip is not mirrored)."""
    f = clip[:, 0].permute(1, 2, 0)
    return bool(f[:4, :8].mean() > f[:4, -8:].mean())


def test_clip_dataset_flip_false_never_mirrors(video):
    s = Sample(str(video), (0,), "v")
    draws = {}
    for flip in (True, False):
        ds = ClipDataset([s], SPEC, seed=0, flip=flip)
        draws[flip] = []
        for epoch in range(16):
            ds.set_epoch(epoch)
            draws[flip].append(_marker_left(ds[0][0]))
    assert not all(draws[True])  # the default flips some draws (p = 0.5 each; 16 draws), so the check can see one
    assert all(draws[False])


def test_clip_dataset_skips_broken_files_and_counts_them(tmp_path, video):
    bad = tmp_path / "bad.avi"
    bad.write_text("text renamed .avi")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    samples = [Sample(str(video), (0,), "good"), Sample(str(bad), (1,), "bad"), Sample(str(empty), (1,), "e")]
    ds = ClipDataset(samples, SPEC, seed=0)
    for i in range(3):
        clip, label = ds[i]
        assert label == 0 and clip.shape == (3, 4, 48, 64)
    assert ds.num_skipped >= 2 and set(ds.failed) == {str(bad), str(empty)}
    assert "not a readable video" in ds.failed[str(bad)]
    ds2 = ClipDataset(samples * 4, SPEC, seed=1)
    loader = build_loader(ds2, 4, train=True, num_workers=2, persistent_workers=False)
    labels = torch.cat([y for _, y in loader])
    assert labels.tolist() == [0] * 12
    assert ds2.num_skipped >= 8  # failed draws, counted in the workers, visible here
    # the distinct files with their reasons, reported by the workers (each file once, however often it was drawn)
    assert set(ds2.collect_failures(timeout=30)) == {str(bad), str(empty)} and ds2.failed == ds2.collect_failures()
    only_bad = ClipDataset([samples[1]], SPEC, max_retries=3)
    with pytest.raises(RuntimeError, match="unreadable"):
        only_bad[0]


def test_video_clips_dataset_video_and_flat(tmp_path, video):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    samples = [Sample(str(video), (1,), "good"), Sample(str(bad), (0,), "bad")]
    ds = VideoClipsDataset(samples, SPEC, num_clips=5)
    item = ds[0]
    assert item["clips"].shape == (5, 3, 4, 48, 64) and item["valid"] and item["label"] == 1
    starts = [_clip_indices(c)[0] for c in item["clips"]]
    assert starts == [0, 9, 18, 27, 36]
    assert not ds[1]["valid"] and ds.num_failed == 1
    flat = VideoClipsDataset(samples, SPEC, num_clips=5, flat=True)
    assert len(flat) == 10
    it = flat[3]
    assert (it["video_index"], it["clip_index"], it["video_id"]) == (0, 3, "good")
    assert _clip_indices(it["clips"]) == [27, 28, 29, 30]
    batch = next(iter(build_loader(flat, 10, train=False, num_workers=0)))
    assert batch["clips"].shape == (10, 3, 4, 48, 64) and batch["valid"].tolist() == [True] * 5 + [False] * 5


def test_default_workers_leave_the_cores_to_torch_on_cpu(monkeypatch):
    """On CPU only the cores beyond torch's threads decode (measured: a worker fighting the model's threads on
    2 cores loses 25-35 % of throughput); on a GPU every core but the main process's decodes."""
    import os

    import torch

    from p3d.data import default_num_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_num_workers("cpu") == 6
    assert default_num_workers("cuda") == 7
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert default_num_workers("cpu") == 0
    assert default_num_workers(torch.device("cuda", 0)) == 7


def test_raw_uint8_clips_normalised_on_device_equal_the_float_clips(tmp_path):
    """The test/extraction pipeline ships uint8 clips and normalises them where the model runs: same numbers as
    the float pipeline, for RGB, the Caffe BGR convention and flow-style XY, and mirrored copies alike."""
    import torch

    from p3d.data import make_synthetic_dataset
    from p3d.data.transforms import to_model_input
    from p3d.spec import InputSpec, caffe_bgr

    root = make_synthetic_dataset(tmp_path, num_classes=2, videos_per_class=1, num_frames=12, size=(40, 48), seed=1)
    samples = build_samples("ucf101", root, subset="train")
    for spec in (InputSpec(clip_len=4, size=(32, 32), resize=(36, 40)), caffe_bgr(clip_len=4, size=32)):
        if spec.resize[0] < 32:
            spec = spec.replace(resize=(36, 40))
        for flip in (False, True):
            ref = VideoClipsDataset(samples, spec, num_clips=3, flip=flip)[0]["clips"]
            raw = VideoClipsDataset(samples, spec, num_clips=3, flip=flip, raw=True)[0]["clips"]
            assert raw.dtype == torch.uint8 and raw.shape == (ref.shape[0], 4, 32, 32, 3)
            got = to_model_input(raw, spec)
            assert got.is_contiguous(memory_format=torch.channels_last_3d)
            torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
