from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from p3d.engine.distributed import ShardedSampler
from p3d.engine.evaluate import EvalResult, evaluate_videos, metrics_from_scores, score_videos
from p3d.engine.trainer import Trainer

from .conftest import tiny_config
from .test_trainer import _env


def test_hits_are_multilabel_aware_and_per_class():
    scores = np.array(
        [
            [0.7, 0.2, 0.1],  # true 0: hit@1
            [0.6, 0.3, 0.1],  # true {1, 0}: hit@1 through its second label
            [0.5, 0.3, 0.2],  # true 2: miss@1, hit@3
            [0.1, 0.8, 0.1],  # true 1: hit
        ]
    )
    labels = [(0,), (1, 0), (2,), (1,)]
    m = metrics_from_scores(scores, labels, 3, topk=2)
    assert m["video_hit@1"] == pytest.approx(3 / 4)
    assert m["video_hit@2"] == pytest.approx(3 / 4)  # the true 2 is third
    assert metrics_from_scores(scores, labels, 3, topk=3)["video_hit@3"] == 1.0
    np.testing.assert_allclose(m["per_class_array"], [1.0, 1.0, 0.0])
    assert m["confusion"] == [[1, 0, 0], [1, 1, 0], [1, 0, 0]]


def test_unlabelled_videos_are_not_scored():
    m = metrics_from_scores(np.array([[0.9, 0.1], [0.2, 0.8]]), [(), (1,)], 2)
    assert m["video_hit@1"] == 1.0


def test_sharded_sampler_pads_covers_and_resumes():
    shards = [ShardedSampler(5, rank=r, world_size=2, shuffle=True, seed=3) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    a, b = (s.order() for s in shards)
    assert len(a) == len(b) == 3 and set(a) | set(b) == set(range(5))
    shards[0].set_epoch(4, start=2)
    assert list(shards[0]) == a[2:] and len(shards[0]) == 1
    other = ShardedSampler(5, shuffle=True, seed=3)
    other.set_epoch(5)
    assert other.order() != ShardedSampler(5, shuffle=True, seed=3).order()


class _Const(torch.nn.Module):
    """Scores each clip by its mean pixel value into 3 fixed classes: deterministic, no training needed."""

    input_spec = None

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([m, -m, 0 * m], dim=1)


def test_two_shards_with_padding_equal_one_process(tiny_data):
    from p3d.data import VideoClipsDataset, build_samples

    test = build_samples("ucf101", tiny_data, subset="test")
    spec = tiny_config(tiny_data, tiny_data).data
    from p3d.spec import InputSpec

    spec = InputSpec(clip_len=8, size=(32, 32), resize=(40, 40))
    ds = VideoClipsDataset(test, spec, num_clips=3)
    single, _ = score_videos(_Const(), ds, num_workers=0, max_videos=5, clip_batch=2)
    parts = [score_videos(_Const(), ds, num_workers=0, max_videos=5, rank=r, world_size=2)[0] for r in range(2)]
    assert sum(len(p) for p in parts) == 6  # 5 videos over 2 ranks: one padded duplicate
    merged = {**parts[0], **parts[1]}
    assert sorted(merged) == list(range(5))
    for v in merged:
        np.testing.assert_allclose(merged[v]["scores"], single[v]["scores"], rtol=1e-6)
        assert merged[v]["num_clips"] == 3


def test_evaluate_end_to_end_and_unreadable_video(tiny_data, tmp_path):
    import shutil

    from p3d.data import build_samples

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    test = build_samples("ucf101", root, subset="test")
    open(test.samples[0].path, "wb").write(b"not a video")
    t = Trainer(tiny_config(root, tmp_path / "run", optim={"iterations": 1}))
    t.fit()
    res = evaluate_videos(t.model, test, num_clips=4, clip_batch=3, num_workers=0)
    assert isinstance(res, EvalResult)
    m = res.metrics()
    assert m["num_videos"] == 5 and m["num_clips"] == 20
    assert list(res.failed) == [test.samples[0].path] and res.failed[test.samples[0].path]  # with its reason
    assert 0.0 <= m["video_hit@1"] <= m["video_hit@5"] == 1.0


def test_test_and_predict_commands(tiny_data, tmp_path):
    t = Trainer(tiny_config(tiny_data, tmp_path / "run", optim={"iterations": 1}))
    t.fit()
    ckpt = tmp_path / "run" / "checkpoints" / "ckpt-00000001.pt"
    out = tmp_path / "test"
    r = subprocess.run([sys.executable, "-m", "p3d", "test", str(ckpt), "--clips", "3", "--workers", "0",
                        "--out", str(out)], env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "video hit@1" in r.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["num_videos"] == 6 and m["num_clips"] == 18 and set(m["per_class"]) == {"MoveLeft", "MoveRight", "RotateCW"}
    )
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 6
    assert (out / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    video = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])["path"]
    r = subprocess.run([sys.executable, "-m", "p3d", "predict", video, str(tmp_path / "missing.mp4"), "--weights",
                        str(ckpt), "--topk", "2"], env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "missing.mp4: video not found" in r.stderr
    r = subprocess.run([sys.executable, "-m", "p3d", "predict", video, "--weights", str(ckpt), "--topk", "2",
                        "--json", "--clips", "4"], env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)["top"]
    assert len(top) == 2 and {n for n, _ in top} <= {"MoveLeft", "MoveRight", "RotateCW"}
