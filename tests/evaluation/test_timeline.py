"""Timelines and localisation: detection parameters (bad values are one-line errors), the timeline files (JSON, CSV,
PNG), ``p3d predict --timeline`` on generated long videos (its scores equal a dense store's), and ``p3d localize``:
hand-computed mAP@tIoU from an oracle store, and the same numbers from the store, from timelines and in-process."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.evaluation.localization import detect_segments, read_ground_truth
from p3d.evaluation.timeline import (
    DetectionParams,
    evaluate_localization,
    make_timeline,
    match_video_ids,
    read_timeline,
    window_cells,
    write_timeline,
)
from p3d.representation.store import FeatureWriter, read_features

CLASSES = ["X", "Y", "Z"]


def test_detection_params_are_checked():
    assert DetectionParams().check() == DetectionParams(0.5, 5, "mean", 0.5, 0.0)
    for bad, msg in [
        ({"threshold": 1.5}, "threshold must be a score in [0, 1], got 1.5"),
        ({"threshold": float("nan")}, "threshold must be a score in [0, 1]"),
        ({"smoothing": 4}, "smoothing must be an odd number of windows >= 1, got 4"),
        ({"smoothing": 0}, "smoothing must be an odd number"),
        ({"nms_iou": -0.1}, "nms_iou must be a tIoU in [0, 1]"),
        ({"min_duration": -1.0}, "min_duration must be >= 0 seconds"),
        ({"smoothing_method": "median"}, "smoothing method must be one of"),
    ]:
        with pytest.raises(ValueError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            DetectionParams(**bad).check()


def test_match_video_ids():
    got = match_video_ids(["videos/v_abc", "v_def.mp4", "ghi", "x/unknown"], ["abc", "def", "ghi", "v_zzz"])
    assert got == {"videos/v_abc": "abc", "v_def.mp4": "def", "ghi": "ghi"}


def test_timeline_files(tmp_path):
    rng = np.random.default_rng(0)
    times = np.stack([np.arange(30) * 0.5, np.arange(30) * 0.5 + 1.0], axis=1)
    scores = rng.dirichlet(np.ones(3), size=30)
    scores[8:16] = [0.9, 0.05, 0.05]
    params = DetectionParams(threshold=0.6, smoothing=3)
    tl = make_timeline("a/b c.mp4", scores, times, CLASSES, params)
    # windows of 1 s every 0.5 s: each stands for the 0.5 s around its centre (the first from 0, the last to 15.5)
    cells = window_cells(times)
    np.testing.assert_allclose(cells[[0, 1, -1]], [[0.0, 0.75], [0.75, 1.25], [14.75, 15.5]])
    assert tl.segments == detect_segments(scores, cells, threshold=0.6, smoothing=3, class_names=CLASSES)
    assert tl.segments[0]["label"] == "X" and tl.segments[0]["start"] == pytest.approx(4.25)
    paths = write_timeline(tl, tmp_path, ground_truth=[{"start": 4.0, "end": 8.5, "label": "X"}])
    kinds = ("json", "windows.csv", "segments.csv", "png")
    assert {p.name for p in paths.values()} == {f"a__b_c.mp4.{e}" for e in kinds}
    back = read_timeline(paths["json"])
    np.testing.assert_array_equal(back.scores, scores)
    np.testing.assert_array_equal(back.window_times, times)
    np.testing.assert_allclose(back.smoothed, tl.smoothed)
    assert back.segments == tl.segments and back.params == params and back.video == "a/b c.mp4"
    rows = list(csv.reader(paths["windows_csv"].open()))
    assert rows[0] == ["start", "end", "X", "Y", "Z", "smoothed:X", "smoothed:Y", "smoothed:Z"]
    np.testing.assert_array_equal(np.array(rows[1:], dtype=float), np.hstack([times, scores, tl.smoothed]))
    segs = list(csv.DictReader(paths["segments_csv"].open()))
    assert [(float(r["start"]), float(r["end"]), r["label"], float(r["score"])) for r in segs] == [
        (s["start"], s["end"], s["label"], s["score"]) for s in tl.segments
    ]
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a p3d timeline"):
        read_timeline(tmp_path / "bad.json")


# -------------------------------------------------------------------------------------------------- an oracle
STEP = 0.04  # window length and stride (s)


def _oracle(tmp_path: Path) -> tuple[Path, Path]:
    """Two videos of 5 s, windows of 0.04 s.  Ground truth: a: X [1, 2], Y [3, 4]; b: X [0.6, 1.6].  Window scores:
    1 inside a's Y and b's X; 0.9 for X on a's [1, 1.72] only (tIoU 0.72 with [1, 2]); uniform elsewhere."""
    db = {
        "a": {"subset": "validation", "duration": 5.0, "annotations": [
            {"segment": [1.0, 2.0], "label": "X"}, {"segment": [3.0, 4.0], "label": "Y"}]},
        "b": {"subset": "validation", "duration": 5.0, "annotations": [{"segment": [0.6, 1.6], "label": "X"}]},
        "c": {"subset": "training", "duration": 5.0, "annotations": [{"segment": [0.0, 1.0], "label": "Z"}]},
    }  # fmt: skip
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"version": "VERSION 1.3", "database": db}))
    starts = np.round(np.arange(125) * STEP, 6)
    times = np.stack([starts, starts + STEP], axis=1)
    meta = {"dense": {"stride": 1}, "layers": ["prob"], "model_cfg": {"class_names": CLASSES}}

    def scores(on: list[tuple[float, float, int, float]]) -> np.ndarray:
        s = np.full((len(starts), 3), 1 / 3, np.float32)
        for a, b, k, v in on:
            sel = (starts >= a - 1e-9) & (starts + STEP <= b + 1e-9)
            s[sel] = (1 - v) / 2
            s[sel, k] = v
        return s

    with FeatureWriter(tmp_path / "store", meta) as w:
        for vid, on in (("v_a", [(1.0, 1.72, 0, 0.9), (3.0, 4.0, 1, 1.0)]), ("v_b", [(0.6, 1.6, 0, 1.0)])):
            s = scores(on)
            w.add(vid, {"prob": s.mean(0)}, clip={"prob": s}, clip_times=times)
        s = scores([(0.0, 1.0, 1, 1.0)])  # a training video: not scored
        w.add("v_c", {"prob": s.mean(0)}, clip={"prob": s}, clip_times=times)
    return tmp_path / "store", gt


def test_localize_oracle_hand_computed(tmp_path, capsys):
    store, gt = _oracle(tmp_path)
    # X: a's detection (0.9) is a hit up to tIoU 0.70 and a false positive from 0.75, b's (1.0) always a hit;
    # sorted by score: b (TP), a (TP or FP): AP 1, or precision 1 at recall 1/2 -> AP 0.5.  Y: AP 1.
    expected = [1.0] * 5 + [0.75] * 5
    assert main(["localize", str(store), "--annotations", str(gt), "--smoothing", "1", "-o", str(tmp_path / "o"),
                 "--json"]) == 0  # fmt: skip
    m = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(m["detection"]["mAP"], expected)
    assert m["detection"]["average_mAP"] == pytest.approx(0.875)
    assert m["detection"]["ap"]["Y"] == [1.0] * 10
    assert m["classification"]["hit@1"] == 1.0 and m["classification"]["mAP"] == 1.0
    # Z is annotated in the training subset only: a class of the file, scored, without instances here
    assert m["scored_classes"] == CLASSES and m["unscored_classes"] == []
    assert m["outside_subset"] == ["v_c"] and m["missing"] == []
    dets = json.loads((tmp_path / "o" / "detections.json").read_text())["results"]
    assert sorted(dets) == ["a", "b"] and dets["a"][0]["segment"] == pytest.approx([3.0, 4.0])
    assert dets["a"][1]["segment"] == pytest.approx([1.0, 1.72]) and dets["a"][1]["score"] == pytest.approx(0.9)
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["detection"]["mAP"] == m["detection"]["mAP"]
    assert (tmp_path / "o" / "timelines" / "a.png").read_bytes()[:4] == b"\x89PNG"
    # the written timelines, read back as the source, give the same numbers
    assert main(["localize", str(tmp_path / "o" / "timelines"), "--annotations", str(gt), "--smoothing", "1",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["detection"]["mAP"] == m["detection"]["mAP"]
    # a stricter threshold than 0.9: a's X is never detected -> X AP 0.5 at every tIoU
    assert main(["localize", str(store), "--annotations", str(gt), "--smoothing", "1", "--threshold", "0.95",
                 "--json"]) == 0  # fmt: skip
    np.testing.assert_allclose(json.loads(capsys.readouterr().out)["detection"]["mAP"], [0.75] * 10)


def test_columns_outside_the_ground_truth(tmp_path):
    store, gt = _oracle(tmp_path)
    fs = read_features(store)
    windows = {vid: (fs.sequence(vid, "prob"), fs.window_times(vid)) for vid in fs.ids}
    truth = read_ground_truth(gt, "validation")
    res = evaluate_localization(windows, ["X", "Y", "Q"], truth, DetectionParams(smoothing=1))
    assert res.unscored_classes == ["Q"] and res.scored_classes == ["X", "Y"]
    assert res.detection.average_mAP == pytest.approx(0.875) and set(res.video_scores["a"].shape) == {2}
    with pytest.raises(ValueError, match="none of the 2 score columns"):
        evaluate_localization(windows, ["P", "Q"], truth)


def test_localize_bad_inputs(tmp_path, capsys):
    store, gt = _oracle(tmp_path)
    for args, msg in [
        (["--threshold", "2"], "--threshold must be a score in [0, 1], got 2.0"),
        (["--smoothing", "2"], "--smoothing must be an odd number of windows >= 1, got 2"),
        (["--nms-iou", "1.5"], "--nms-iou must be a tIoU in [0, 1], got 1.5"),
        (["--subset", "testing"], "no video in subset 'testing'"),
        (["--layer", "logits"], "no window features of layer 'logits'"),
    ]:
        assert main(["localize", str(store), "--annotations", str(gt), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
    assert main(["localize", str(tmp_path / "nothing"), "--annotations", str(gt)]) == 2
    assert "no such feature store" in capsys.readouterr().err


# ------------------------------------------------------------------------------- a real model, long videos
@pytest.fixture(scope="module")
def trained_like(tmp_path_factory):
    """Generated long videos and a tiny model saved with the generator's class names (untrained: the plumbing, not
    the accuracy, is under test here; the demo measures accuracy)."""
    from p3d.data import make_synthetic_untrimmed
    from p3d.models import create_model
    from p3d.models.pretrained import save_pretrained
    from p3d.spec import InputSpec

    root = tmp_path_factory.mktemp("long")
    gt = make_synthetic_untrimmed(
        root, 2, num_classes=3, segments_per_video=(1, 2), segment_frames=(10, 16), background_frames=(4, 8),
        size=(64, 64), validation_fraction=1.0, seed=5,
    )  # fmt: skip
    torch.manual_seed(0)
    spec = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))
    m = create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=spec)
    with torch.no_grad():
        m.fc.weight.mul_(200.0)  # confident scores, so that some windows cross the threshold
    m.pretrained_cfg = m.pretrained_cfg.replace(class_names=("MoveLeft", "MoveRight", "RotateCW"))
    save_pretrained(m, root / "tiny.safetensors")
    return root, gt, root / "tiny.safetensors"


def test_predict_timeline_and_localize(trained_like, tmp_path, capsys):
    root, gt, weights = trained_like
    videos = sorted(str(p) for p in (root / "videos").glob("*.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 50)
    det = ["--threshold", "0.4", "--smoothing", "3"]
    args = ["predict", *videos, str(junk), "--weights", str(weights), "--timeline", str(tmp_path / "tl"),
            "--stride", "4", "--batch-size", "8", "--workers", "0", *det]  # fmt: skip
    assert main(args) == 1  # the junk file: exit status 1, its reason printed, the others done
    out = capsys.readouterr().out
    assert f"{junk}: unreadable: not a readable video container" in out
    # the same model densely into a store: predict's window scores are the store's prob sequences
    assert main(["extract", str(root / "videos"), "-o", str(tmp_path / "s"), "--weights", str(weights), "--dense",
                 "--stride", "4", "--layers", "prob", "--workers", "0", "--batch-size", "8",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    fs = read_features(tmp_path / "s")
    found = 0
    for v in videos:
        stem = Path(v).stem
        tl = read_timeline(tmp_path / "tl" / f"{stem}.json")
        np.testing.assert_allclose(tl.scores, fs.sequence(stem, "prob"), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(tl.window_times, fs.window_times(stem))
        cells = window_cells(tl.window_times)
        assert tl.segments == detect_segments(
            tl.scores, cells, threshold=0.4, smoothing=3, nms_iou=0.5, class_names=tl.class_names
        )
        found += len(tl.segments)
        for ext in ("windows.csv", "segments.csv", "png"):
            assert (tmp_path / "tl" / f"{stem}.{ext}").stat().st_size > 0
    assert found > 0
    # localize from the store and from predict's timelines: the same numbers, equal to the library's
    assert main(["localize", str(tmp_path / "s"), "--annotations", str(gt), *det, "--json"]) == 0
    from_store = json.loads(capsys.readouterr().out)
    assert main(["localize", str(tmp_path / "tl"), "--annotations", str(gt), *det, "--json"]) == 0
    from_tl = json.loads(capsys.readouterr().out)
    truth = read_ground_truth(gt, "validation")
    windows = {vid: (fs.sequence(vid, "prob"), fs.window_times(vid)) for vid in fs.ids}
    lib = evaluate_localization(windows, fs.meta["model_cfg"]["class_names"], truth, DetectionParams(0.4, 3))
    for got in (from_store, from_tl):
        np.testing.assert_allclose(got["detection"]["mAP"], lib.detection.mAP, atol=1e-12)
        assert got["classification"]["hit@1"] == lib.classification.hits[1]
    assert len(lib.timelines) == 2 and 0.0 <= lib.detection.average_mAP <= 1.0
    assert main(["predict", videos[0], "--weights", str(weights), "--timeline", str(tmp_path / "x"),
                 "--threshold", "-1"]) == 2  # fmt: skip
    assert "--threshold must be a score in [0, 1], got -1.0" in capsys.readouterr().err
    assert main(["predict", videos[0], "--weights", str(weights), "--stride", "4"]) == 2
    assert "add --timeline OUTDIR" in capsys.readouterr().err
