"""Feature extraction on tiny models and tiny synthetic videos: exactness of the batched clip stream, flip
averaging, bad videos, resume after an interruption, rank sharding, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.data import VideoClipsDataset, build_samples, make_synthetic_dataset, samples_from_path, video_ids
from p3d.data.datasets import Sample
from p3d.models import create_model
from p3d.representation.extract import build_meta, extract_features, reduce_layer
from p3d.representation.store import read_features
from p3d.spec import InputSpec

SPEC = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))
LAYERS = ["pool5", "res5c", "res4_last", "prob"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_classes=3, videos_per_class=4, num_frames=20, size=(64, 64), seed=0)
    return root


@pytest.fixture(scope="module")
def samples(dataset):
    return build_samples("ucf101", dataset, split=1, subset="train")


def tiny(name: str = "p3d63", seed: int = 0):
    torch.manual_seed(seed)
    m = create_model(name, width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=SPEC)
    return m.eval()


def run(model, samples, out, **kw):
    meta = build_meta(
        model,
        kw.get("layers", LAYERS),
        num_clips=kw.get("num_clips", 3),
        flip=kw.get("flip", False),
        map_pooling="max",
        class_names=getattr(samples, "classes", None),
    )
    kw = {"layers": LAYERS, "num_clips": 3, "batch_size": 5, "num_workers": 0, "progress": False, **kw}
    return extract_features(model, samples, out, meta, **kw)


def reference(model, sample: Sample, num_clips: int, flip: bool = False) -> dict[str, np.ndarray]:
    """Per-video computation without the batching engine: all clips of one video in one forward."""
    ds = VideoClipsDataset([sample], SPEC, num_clips=num_clips)
    clips = ds[0]["clips"]
    with torch.inference_mode():
        outs = model.forward_layers(clips, LAYERS)
        feats = {k: reduce_layer(v, "max") for k, v in outs.items()}
        if flip:
            outs_f = model.forward_layers(clips.flip(-1), LAYERS)
            feats = {k: 0.5 * (feats[k] + reduce_layer(outs_f[k], "max")) for k in feats}
    return {k: v.mean(0).numpy() for k, v in feats.items()}


def test_batched_stream_equals_per_video_forward(samples, tmp_path):
    model = tiny()
    stats = run(model, samples, tmp_path / "f", clip_level=True)  # 3 clips/video, batches of 5: crosses videos
    assert stats.written == len(samples) == 9 and not stats.bad and stats.clips == 27
    fs = read_features(tmp_path / "f")
    assert fs.ids[0] == "MoveLeft/v_MoveLeft_g02_c01"  # the split list's path, without extension
    np.testing.assert_array_equal(fs.labels, [s.label for s in samples])
    assert {k: v.shape[1] for k, v in fs.video.items()} == {"pool5": 128, "res5c": 128, "res4_last": 64, "prob": 3}
    for i in (0, 4, 8):
        ref = reference(model, samples[i], 3)
        for k in LAYERS:
            np.testing.assert_allclose(fs.video[k][i], ref[k], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fs.video["prob"].sum(1), 1, rtol=1e-5)
    assert fs.clip["pool5"].shape == (27, 128) and fs.meta["num_clips"] == 3
    np.testing.assert_allclose(fs.clip["pool5"][fs.clip_video == 2].mean(0), fs.video["pool5"][2], rtol=1e-5)


def test_flip_averaging(samples, tmp_path):
    model = tiny()
    run(model, samples[:2], tmp_path / "f", flip=True, num_clips=2)
    fs = read_features(tmp_path / "f")
    ref = reference(model, samples[1], 2, flip=True)
    np.testing.assert_allclose(fs.video["pool5"][1], ref["pool5"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(ref["pool5"], reference(model, samples[1], 2)["pool5"])


def test_bad_videos_are_listed_not_fatal(samples, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    items = [samples[0], Sample(str(junk), (), "junk"), Sample(str(tmp_path / "gone.mp4"), (), "gone"), samples[1]]
    stats = run(tiny(), items, tmp_path / "f", layers=["pool5"])
    junk_id, gone_id = video_ids(items)[1:3]
    assert stats.written == 2 and set(stats.bad) == {junk_id, gone_id}
    fs = read_features(tmp_path / "f")
    assert len(fs) == 2 and "not a readable video" in fs.bad[junk_id] and "not found" in fs.bad[gone_id]


def test_interrupted_run_resumes_without_loss(samples, tmp_path):
    model = tiny()
    calls = []

    def stop_after_three(n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(model, samples, tmp_path / "f", on_batch=stop_after_three, flush_every=2)
    partial = read_features(tmp_path / "f")
    assert 0 < len(partial) < len(samples)  # 15 clips = 5 complete videos written, the rest not
    stats = run(model, samples, tmp_path / "f")
    assert stats.skipped == len(partial) and stats.written == len(samples) - len(partial)
    full = read_features(tmp_path / "f")
    run(model, samples, tmp_path / "clean")
    clean = read_features(tmp_path / "clean")
    order = full.rows(clean.ids)
    np.testing.assert_allclose(full.video["pool5"][order], clean.video["pool5"], rtol=1e-5, atol=1e-6)


def test_rank_shards_cover_everything_once(samples, tmp_path):
    model = tiny()
    s0 = run(model, samples, tmp_path / "f", rank=0, world_size=2, layers=["pool5"])
    s1 = run(model, samples, tmp_path / "f", rank=1, world_size=2, layers=["pool5"])
    assert (s0.written, s1.written) == (5, 4) and s1.skipped == 0  # the shards do not depend on start times
    fs = read_features(tmp_path / "f")
    assert sorted(fs.ids) == sorted(video_ids(list(samples)))


def test_unknown_layer_fails_before_decoding(samples, tmp_path):
    with pytest.raises(ValueError, match="unknown layer 'fc9'"):
        run(tiny(), samples, tmp_path / "f", layers=["fc9"])


def test_samples_from_folder_and_list(dataset, tmp_path):
    sl = samples_from_path(dataset / "UCF-101")
    assert sl.classes == ["MoveLeft", "MoveRight", "RotateCW"] and len(sl) == 12
    lst = tmp_path / "videos.txt"
    lst.write_text(f"{sl[0].path} a\n{sl[5].path} b\n")
    two = samples_from_path(lst)
    assert [s.label for s in two] == [0, 1] and two.classes == ["a", "b"]
    assert video_ids(list(sl))[0] == "MoveLeft/v_MoveLeft_g01_c01"


def test_extract_cli_then_svm(dataset, tmp_path, capsys):
    out = tmp_path / "store"
    args = [
        "extract", str(dataset / "UCF-101"), "-o", str(out), "--model", "resnet50_2d",
        "--model-option", "width=4", "--model-option", "layers=[1,1,1,1]", "--num-classes", "3",
        "--clip-len", "4", "--size", "48", "--resize", "56", "56", "--num-clips", "2", "--batch-size", "6",
        "--workers", "1", "--layers", "pool5", "prob", "--no-progress", "--merge", str(tmp_path / "m.safetensors"),
    ]  # fmt: skip
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "12 video(s) written, 0 already done, 0 bad" in text and "videos/s" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["model"] == "resnet50_2d" and meta["model_cfg"]["input"]["clip_len"] == 4 and meta["num_clips"] == 2
    assert main(args) == 0
    assert "0 video(s) written, 12 already done" in capsys.readouterr().out
    assert main(["svm", str(tmp_path / "m.safetensors"), "--kfold", "3"]) == 0
    assert "pooled: top1" in capsys.readouterr().out


def test_iter_video_outputs_batches_across_videos():
    from p3d.engine.inference import iter_video_outputs

    sizes = []
    clips = {k: torch.randn(n, 1, 1, 2, 2) for k, n in ((0, 3), (1, 5), (2, 2))}
    videos = [(0, clips[0], None), (9, None, "broken"), (1, clips[1], None), (0, clips[2], None)]  # key 0 twice
    got = list(
        iter_video_outputs(
            videos, lambda x: {"m": x.mean(dim=(1, 2, 3, 4))[:, None]}, batch_size=4,
            on_batch=lambda n, _: sizes.append(n),
        )
    )  # fmt: skip
    assert sizes == [4, 4, 2] and got[0] == (9, None, "broken")
    assert [k for k, _, _ in got[1:]] == [0, 1, 0]
    for (_, out, _), c in zip(got[1:], (clips[0], clips[1], clips[2]), strict=True):
        np.testing.assert_allclose(out["m"][:, 0], c.mean(dim=(1, 2, 3, 4)).numpy(), rtol=1e-6)


def test_multi_label_samples_keep_all_labels(samples, tmp_path):
    """ActivityNet untrimmed / Sports-1M samples carry several labels: the store keeps all of them."""
    items = [Sample(s.path, labs, s.video_id) for s, labs in zip(samples[:3], [(2, 0), (1,), ()], strict=True)]
    run(tiny(), items, tmp_path / "f", layers=["pool5"])
    fs = read_features(tmp_path / "f")
    assert fs.multi_labels == [(2, 0), (1,), ()]
    np.testing.assert_array_equal(fs.labels, [2, 1, -1])


def test_auto_workers_measure_rates_and_keep_results(samples, tmp_path, monkeypatch):
    """``num_workers="auto"`` sizes the decoding pool from a probe of the model's and the decoder's rates (what a
    CUDA run does without ``--workers``); the features do not depend on it, and the stats say where time went."""
    import p3d.data.loader as loader

    monkeypatch.setattr(loader, "_cores", lambda: 4)  # room for 3 workers whatever this machine has
    model = tiny()
    auto = run(model, samples[:4], tmp_path / "auto", layers=["pool5"], num_workers="auto")
    plan = auto.loader
    assert plan is not None and plan.model_rate > 0 and plan.decode_rate > 0
    assert plan.workers == min(3, math.ceil(1.25 * plan.model_rate / plan.decode_rate))
    assert auto.workers == plan.workers and auto.written == 4
    assert 0 <= auto.wait_seconds and auto.forward_seconds + auto.wait_seconds <= auto.seconds
    ref = run(model, samples[:4], tmp_path / "ref", layers=["pool5"])  # in-process, no plan
    assert ref.loader is None and ref.workers == 0
    a, b = read_features(tmp_path / "auto"), read_features(tmp_path / "ref")
    np.testing.assert_allclose(a.video["pool5"][a.rows(b.ids)], b.video["pool5"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_workers"):
        run(model, samples[:1], tmp_path / "bad", num_workers="many")
