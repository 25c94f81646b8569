from __future__ import annotations

import json

import numpy as np

from p3d.apps.demo import DemoSettings, run_demo
from p3d.evaluation.lists import read_split_list
from p3d.evaluation.svm import Split, SVMConfig, run_protocol
from p3d.representation.encoders import ids_digest
from p3d.representation.local import LocalSet
from p3d.representation.store import read_features


def _svm_top1_from_store(tmp_path, store: str, layer: str = "pool5") -> float:
    """Recompute a demo SVM accuracy from its feature store and the split lists, without the demo's protocol glue."""
    fs = read_features(tmp_path / store)
    lists = tmp_path / "data" / "ucfTrainTestlist"
    rows = [fs.rows([v for v, _ in read_split_list(lists / f"{n}list01.txt")]) for n in ("train", "test")]
    res = run_protocol(fs.layer(layer), fs.labels, [Split("split1", *rows)], SVMConfig(seed=0), topk=(1,))
    return res.summary()["top1"]


def test_demo_pipeline_writes_the_report(tmp_path):
    """The whole demo on a toy budget (accuracy is checked by running the real demo, see BENCHMARKS/README)."""
    s = DemoSettings(
        num_classes=2,
        videos_per_class=6,
        video_size=(48, 48),
        num_frames=32,
        iterations=2,
        lr_step=1,
        test_clips=2,
        feature_clips=2,
        num_workers=0,
    )
    report = run_demo(tmp_path, s, variants=False)
    keys = [r["key"] for r in report["results"]]
    assert keys == ["p3d", "2d", "p3d_flow", "fusion"]  # the flow 2D ResNet comes with variants
    for r in report["results"]:
        assert 0.0 <= r["video_hit@1"] <= 1.0 and r["params"] > 0 and set(r["per_class"]) == {"MoveLeft", "MoveRight"}
        assert r["rotation_sense"] is None  # no rotation classes among the first two
    assert len(list((tmp_path / "flow").rglob("*.flow.mkv"))) == 12
    assert (tmp_path / "runs" / "p3d_flow" / "model.safetensors").is_file()
    assert "| P3D two-stream (RGB + flow, 1:1) |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "| P3D (mixed A→B→C) |" in md and "| 2D ResNet (frame-level) |" in md
    assert json.loads((tmp_path / "report.json").read_text())["chance"] == 0.5

    # Representation: pool5 stores of all 12 videos, SVM accuracies that the stored features reproduce, t-SNE.
    rep = report["representation"]
    assert [r["key"] for r in rep["results"]] == ["p3d", "2d"]
    for r in rep["results"]:
        fs = read_features(tmp_path / r["store"])
        assert len(fs) == 12 and fs.layer("pool5").shape[1] == r["dim"] and (fs.labels >= 0).all()
        assert fs.meta["num_clips"] == 2 and fs.meta["weights"]["state_sha256"]
        assert np.isfinite(fs.layer("pool5")).all()
        assert 0.0 <= r["svm_top1"] <= 1.0 and (r["train_videos"], r["test_videos"]) == (10, 2)
        assert r["svm_top1"] == _svm_top1_from_store(tmp_path, r["store"])
        assert f"| {r['label']} pool5 | {r['dim']} | {r['svm_top1']:.1%} |" in md
    assert (tmp_path / rep["tsne"]).read_bytes()[:4] == b"\x89PNG"
    assert "## Representation" in md and f"]({rep['tsne']})" in md

    # res5c encodings of the P3D store: fitted on the 10 training videos only, the same SVM and split as pool5
    assert [e["encoder"] for e in rep["encodings"]] == ["fv", "vlad", "fv-vae"] and "### Encoding res5c" in md
    train_ids = [v for v, _ in read_split_list(tmp_path / "data" / "ucfTrainTestlist" / "trainlist01.txt")]
    for e in rep["encodings"]:
        fs = read_features(tmp_path / e["store"])
        assert len(fs) == 12 and fs.layers == [e["encoder"]] and fs.layer().shape[1] == e["dim"]
        assert e["fitted_on"]["ids_sha256"] == ids_digest(train_ids) and e["fitted_on"]["videos"] == 10
        assert e["svm_top1"] == _svm_top1_from_store(tmp_path, e["store"], e["encoder"])
        assert f"| res5c {e['label']} | {e['dim']} | {e['svm_top1']:.1%} |" in md
    local = LocalSet(tmp_path / rep["results"][0]["store"])
    assert local.layer == "res5c" and local.count(0) == 2 * 5  # 2 clips x (2x2 positions + their maximum)

    # Run again: finished runs resume from their final checkpoints and complete feature stores are reused.
    again = run_demo(tmp_path, s, variants=False)
    assert [r["video_hit@1"] for r in again["results"]] == [r["video_hit@1"] for r in report["results"]]
    assert [r["features"]["written"] for r in again["results"] if r["features"]] == [0, 0]
    assert [r["svm_top1"] for r in again["representation"]["results"]] == [r["svm_top1"] for r in rep["results"]]
    again_enc = again["representation"]["encodings"]
    assert [e["fit_seconds"] for e in again_enc] == [0.0] * 3  # the saved encoders are reused, not fitted again
    assert [e["svm_top1"] for e in again_enc] == [e["svm_top1"] for e in rep["encodings"]]


def test_demo_without_features(tmp_path):
    s = DemoSettings(
        num_classes=2, videos_per_class=6, video_size=(48, 48), iterations=1, lr_step=1, test_clips=1, num_workers=0
    )
    report = run_demo(tmp_path, s, variants=False, features=False, flow=False)
    assert report["representation"] is None and not (tmp_path / "features").exists()
    assert "## Representation" not in (tmp_path / "report.md").read_text()


def test_rotation_sense_compares_the_two_rotations_only():
    from p3d.apps.demo import _rotation_sense
    from p3d.engine.evaluate import EvalResult

    classes = ["MoveLeft", "MoveRight", "RotateCW", "RotateCCW"]
    scores = np.array([[0.1, 0.1, 0.5, 0.3], [0.1, 0.1, 0.45, 0.35], [0.9, 0.0, 0.0, 0.1], [0.7, 0.1, 0.1, 0.1]])
    ev = EvalResult(classes, ["a", "b", "c", "d"], ["a", "b", "c", "d"], [(2,), (3,), (3,), (0,)], scores, 0, 0)
    # a: CW above CCW (right); b: CW above CCW but it is CCW (wrong); c: CCW 0.1 > CW 0.0 (right, even though
    # MoveLeft wins overall); d: not a rotation video
    assert _rotation_sense(ev) == 2 / 3
    ev.classes = ["MoveLeft", "MoveRight", "Approach", "Recede"]
    assert _rotation_sense(ev) is None
