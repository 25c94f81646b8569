"""``p3d demo --timeline`` on a toy budget: both trained networks localise actions in generated long videos and the
report carries ActivityNet mAP@tIoU (the accuracy itself is measured by running the real demo, see BENCHMARKS.md)."""

from __future__ import annotations

import json

import numpy as np

from p3d.apps.demo import DemoSettings, run_demo
from p3d.cli import main
from p3d.evaluation.localization import TIOU_THRESHOLDS


def test_demo_timeline_reports_localisation(tmp_path, capsys):
    s = DemoSettings(
        num_classes=2,
        videos_per_class=6,
        video_size=(48, 48),
        iterations=1,
        lr_step=1,
        test_clips=1,
        num_workers=0,
        untrimmed_videos=2,
        window_stride=8,
    )
    report = run_demo(tmp_path, s, features=False, timeline=True)
    loc = report["localization"]
    gt = json.loads((tmp_path / "untrimmed" / "activity_net.v1-3.min.json").read_text())["database"]
    assert loc["videos"] == 2 == len(gt) and loc["instances"] == sum(len(v["annotations"]) for v in gt.values())
    assert loc["tiou_thresholds"] == [round(float(t), 2) for t in TIOU_THRESHOLDS]
    assert [r["key"] for r in loc["results"]] == ["p3d", "2d"]
    for r in loc["results"]:
        assert len(r["mAP"]) == 10 and all(0.0 <= m <= 1.0 for m in r["mAP"])
        assert r["average_mAP"] == np.mean(r["mAP"]) and 0.0 <= r["hit@1"] <= r["hit@3"] <= 1.0
        assert r["windows"] > 0 and (tmp_path / r["timeline"]).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "## Untrimmed video" in md and f"| {loc['results'][0]['label']} | {loc['results'][0]['mAP'][0]:.3f} |" in md
    # the saved timelines, scored again by p3d localize, give the report's numbers
    gt_json = str(tmp_path / "untrimmed" / "activity_net.v1-3.min.json")
    timelines = str(tmp_path / "untrimmed" / "timelines" / "p3d")
    capsys.readouterr()
    assert main(["localize", timelines, "--annotations", gt_json, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["detection"]["mAP"] == loc["results"][0]["mAP"]
    again = run_demo(tmp_path, s, features=False, timeline=True)  # the long videos are reused, the numbers the same
    assert again["localization"]["results"][0]["mAP"] == loc["results"][0]["mAP"]
