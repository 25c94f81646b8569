from __future__ import annotations

import json

from p3d.engine.demo import DemoSettings, run_demo


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
        num_workers=0,
    )
    report = run_demo(tmp_path, s, variants=False)
    keys = [r["key"] for r in report["results"]]
    assert keys == ["p3d", "2d"]
    for r in report["results"]:
        assert 0.0 <= r["video_hit@1"] <= 1.0 and r["params"] > 0 and set(r["per_class"]) == {"MoveLeft", "MoveRight"}
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "| P3D (mixed A→B→C) |" in md and "| 2D ResNet (frame-level) |" in md
    assert json.loads((tmp_path / "report.json").read_text())["chance"] == 0.5
    # Run again: finished runs resume from their final checkpoints instead of training again.
    again = run_demo(tmp_path, s, variants=False)
    assert [r["video_hit@1"] for r in again["results"]] == [r["video_hit@1"] for r in report["results"]]
