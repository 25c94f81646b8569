import json

import numpy as np
import pytest

from p3d.cli import main
from p3d.data import build_samples, make_synthetic_dataset, probe_video, read_video
from p3d.data.prepare import prepare_video

from .helpers import frame_index, make_frames, write


def test_check_data_reports_bad_files_and_writes_clean_list(tmp_path, capsys):
    root = make_synthetic_dataset(tmp_path / "syn", num_classes=2, videos_per_class=4, num_frames=20, size=(32, 32))
    train = build_samples("ucf101", root, subset="train")
    (tmp_path / "syn" / "UCF-101" / "MoveLeft" / "v_MoveLeft_g04_c01.mp4").write_text("not a video")
    rc = main(["check-data", "ucf101", str(root), "--subset", "train", "--write-clean", str(tmp_path / "clean.csv"),
               "--json", str(tmp_path / "r.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1
    assert "1 flagged" in out and "v_MoveLeft_g04_c01.mp4: not a readable video container" in out
    assert "32x32" in out
    clean = build_samples("manifest", tmp_path / "clean.csv")
    assert len(clean) == len(train) - 1 and clean.classes == train.classes
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["summary"]["frames"]["min"] == 20
    assert main(["check-data", "ucf101", str(root), "--subset", "test", "--min-frames", "21"]) == 1
    assert "too short: video has 20 frames < 21" in capsys.readouterr().out


def test_prepare_keeps_frames_and_layout(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "cls").mkdir(parents=True)
    frames = make_frames(30, 96, 128)
    write(src / "cls" / "a.avi", frames, "mpeg4", options={"qscale": "2"})
    write(src / "cls" / "r.mp4", make_frames(10, 48, 64), rotation=90)
    (src / "cls" / "broken.mkv").write_bytes(b"\x1a\x45\xdf\xa3 junk")
    (src / "split.txt").write_text("cls/a.avi 1\n")
    rc = main(["prepare", str(src), str(tmp_path / "dst"), "--size", "48x64", "--gop", "4"])
    out = capsys.readouterr().out
    assert rc == 1 and "converted 2 videos" in out and "broken.mkv" in out
    assert (tmp_path / "dst" / "split.txt").read_text() == "cls/a.avi 1\n"
    info = probe_video(tmp_path / "dst" / "cls" / "a.mp4")
    assert (info.num_frames, info.height, info.width, info.fps) == (30, 48, 64, 25.0)
    got = read_video(tmp_path / "dst" / "cls" / "a.mp4")
    assert [frame_index(f) for f in got] == list(range(30))
    rot = probe_video(tmp_path / "dst" / "cls" / "r.mp4")
    assert rot.rotation == 0  # rotation applied to the pixels
    assert main(["prepare", str(src), str(tmp_path / "dst"), "--size", "48x64"]) == 1
    assert "kept 2 existing" in capsys.readouterr().out


def test_prepare_video_rejects_odd_size(tmp_path):
    p = write(tmp_path / "v.mp4", make_frames(4))
    with pytest.raises(ValueError, match="even"):
        prepare_video(p, tmp_path / "o.mp4", size=(47, 64))
    assert np.all(read_video(p).shape == (4, 48, 64, 3))
