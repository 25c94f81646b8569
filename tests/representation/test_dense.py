"""Dense extraction on tiny models and generated long videos: the streamed, cross-video batched window features equal a
per-window reference forward; the store's sequences and times; one decoder pass per file; SIGKILL and resume give
the bytes of an uninterrupted run; rank shards and their merge; bad videos; the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.data import make_synthetic_untrimmed, parse_activitynet, video_ids
from p3d.data.datasets import Sample
from p3d.data.dense import window_layout
from p3d.data.transforms import to_model_input
from p3d.data.video import VideoReader
from p3d.models import create_model
from p3d.representation.dense import dense_meta, extract_dense_features
from p3d.representation.extract import build_meta, reduce_layer
from p3d.representation.store import merge_features, read_features
from p3d.spec import InputSpec

SPEC = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))
LAYERS = ["pool5", "res5c", "prob"]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrimmed")
    gt = make_synthetic_untrimmed(
        root, 3, num_classes=3, segments_per_video=(1, 2), segment_frames=(8, 12), background_frames=(3, 6),
        size=(64, 64), validation_fraction=1.0, seed=3,
    )  # fmt: skip
    return gt, parse_activitynet(gt, root, subset="validation")


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=SPEC).eval()


def run(model, samples, out, stride=5, **kw):
    layers = kw.pop("layers", LAYERS)
    meta = build_meta(
        model, layers, num_clips=0, flip=kw.get("flip", False), map_pooling="max",
        class_names=getattr(samples, "classes", None),
        dense=dense_meta(SPEC, stride),
    )  # fmt: skip
    kw = {"batch_size": 6, "chunk": 4, "num_workers": 0, "progress": False, **kw}
    return extract_dense_features(model, samples, out, meta, layers=layers, stride=stride, **kw)


def reference(model, path: str, stride: int, flip: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each window decoded on its own (random access) and run through the model alone."""
    with VideoReader(path) as r:
        lay = window_layout(r.frame_times(), SPEC, stride, fps=r.fps)
        clips = [r.get_frames(idx, size=SPEC.resize)[:, 4:52, 4:52] for idx in lay.indices]
    outs: dict[str, list[np.ndarray]] = {k: [] for k in LAYERS}
    with torch.inference_mode():
        for c in clips:
            x = to_model_input(torch.from_numpy(np.ascontiguousarray(c))[None], SPEC)
            got = {k: reduce_layer(v, "max") for k, v in model.forward_layers(x, LAYERS).items()}
            if flip:
                got_f = model.forward_layers(to_model_input(torch.from_numpy(c[:, :, ::-1].copy())[None], SPEC), LAYERS)
                got = {k: 0.5 * (got[k] + reduce_layer(got_f[k], "max")) for k in got}
            for k in LAYERS:
                outs[k].append(got[k][0].numpy())
    return {k: np.stack(v) for k, v in outs.items()}, lay.times


def test_dense_features_equal_per_window_forward(long_videos, tmp_path):
    _, samples = long_videos
    model = tiny()
    stats = run(model, samples, tmp_path / "f")  # 6 windows per batch, 4 per chunk: batches cross chunks and videos
    fs = read_features(tmp_path / "f")
    assert stats.written == 3 and not stats.bad and fs.is_dense
    assert fs.meta["dense"] == {"stride": 5, "window": 8, "clip_len": 8, "frame_stride": 1, "last": "pad"}
    assert fs.ids == video_ids(list(samples)) and stats.clips == len(fs.clip_times)
    for s, vid in zip(samples, fs.ids, strict=True):
        ref, times = reference(model, s.path, 5)
        np.testing.assert_allclose(fs.window_times(vid), times, rtol=0, atol=1e-12)
        for k in LAYERS:
            seq = fs.sequence(vid, k)
            assert seq.shape == ref[k].shape and seq.dtype == np.float32
            np.testing.assert_allclose(seq, ref[k], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(fs.video[k][fs.rows([vid])[0]], seq.mean(0), rtol=1e-5, atol=1e-6)
    vid, seq, times = next(fs.sequences("prob"))
    assert vid == fs.ids[0] and times.shape == (len(seq), 2) and np.all(np.diff(times[:, 0]) > 0)
    assert times[-1, 1] == pytest.approx(json.loads(Path(long_videos[0]).read_text())["database"][
        Path(samples[0].path).stem[2:]]["duration"])  # fmt: skip  # the padded last window ends with the video


def test_flip_and_window_order(long_videos, tmp_path):
    _, samples = long_videos
    model = tiny()
    run(model, samples[1:2], tmp_path / "f", stride=7, flip=True, layers=["pool5"])
    fs = read_features(tmp_path / "f")
    ref, _ = reference(model, samples[1].path, 7, flip=True)
    np.testing.assert_allclose(fs.sequence(fs.ids[0], "pool5"), ref["pool5"], rtol=1e-4, atol=1e-5)


def test_decoder_called_once_per_file(long_videos, tmp_path, monkeypatch):
    _, samples = long_videos
    calls = []
    orig = VideoReader.iter_indexed_frames
    monkeypatch.setattr(VideoReader, "_seek", lambda *a: pytest.fail("seek during dense extraction"))
    monkeypatch.setattr(VideoReader, "get_frames", lambda *a, **k: pytest.fail("random access in dense extraction"))
    monkeypatch.setattr(
        VideoReader, "iter_indexed_frames", lambda self, **k: calls.append(self.path) or orig(self, **k)
    )
    run(tiny(), samples, tmp_path / "f", layers=["pool5"])
    assert sorted(calls) == sorted(s.path for s in samples)


KILLED_RUN = """
import os, signal, sys, torch
sys.path.insert(0, {src!r})
torch.set_num_threads(int(sys.argv[3]))
from p3d.data import parse_activitynet
from p3d.models import create_model
from p3d.representation.dense import dense_meta, extract_dense_features
from p3d.representation.extract import build_meta
from p3d.spec import InputSpec

spec = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))
torch.manual_seed(0)
model = create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=spec).eval()
samples = parse_activitynet({gt!r}, {root!r}, subset="validation")
meta = build_meta(model, ["pool5", "prob"], num_clips=0, flip=False, map_pooling="max",
                  class_names=samples.classes, dense=dense_meta(spec, 3))
batches = []
def kill_after(n):
    batches.append(n)
    if len(batches) == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
extract_dense_features(model, samples, sys.argv[1], meta, layers=["pool5", "prob"], stride=3, batch_size=8, chunk=4,
                       num_workers=0, flush_every=1, progress=False, on_batch=kill_after)
"""


def test_sigkill_then_resume_equals_uninterrupted_run_bitwise(long_videos, tmp_path):
    """A run SIGKILLed in a subprocess mid-video, resumed here: the same bytes as an uninterrupted run here (same
    model, same threads; every batch has the same shape, see p3d.representation.dense)."""
    gt, samples = long_videos
    script = tmp_path / "extract.py"
    script.write_text(textwrap.dedent(KILLED_RUN.format(src=SRC, gt=str(gt), root=str(Path(gt).parent))))
    with VideoReader(samples[0].path) as r:
        first = window_layout(r.frame_times(), SPEC, 3).num_windows
    kill_at = first // 8 + 2  # batches of 8 windows: the first video is done (and flushed), the second is not
    cmd = [sys.executable, str(script), str(tmp_path / "resumed"), str(kill_at), str(torch.get_num_threads())]
    killed = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    partial = read_features(tmp_path / "resumed")
    assert 0 < len(partial) < len(samples)

    def extract(out):
        return run(tiny(), samples, out, stride=3, layers=["pool5", "prob"], batch_size=8, flush_every=1)

    resumed = extract(tmp_path / "resumed")
    assert (resumed.written, resumed.skipped) == (len(samples) - len(partial), len(partial))
    extract(tmp_path / "clean")
    a, b = read_features(tmp_path / "resumed"), read_features(tmp_path / "clean")
    assert sorted(a.ids) == sorted(b.ids) and len(a.ids) == len(samples)
    for vid in b.ids:
        for k in ("pool5", "prob"):
            assert a.sequence(vid, k).tobytes() == b.sequence(vid, k).tobytes(), (vid, k)
        assert a.window_times(vid).tobytes() == b.window_times(vid).tobytes()


def test_rank_shards_and_merge(long_videos, tmp_path):
    _, samples = long_videos
    model = tiny()
    s0 = run(model, samples, tmp_path / "f", rank=0, world_size=2, layers=["pool5"])
    s1 = run(model, samples, tmp_path / "f", rank=1, world_size=2, layers=["pool5"])
    assert (s0.written, s1.written) == (2, 1)
    merged = merge_features(tmp_path / "f", tmp_path / "m.safetensors")
    run(model, samples, tmp_path / "one", layers=["pool5"])
    m, one = read_features(merged), read_features(tmp_path / "one")
    assert m.is_dense and sorted(m.ids) == sorted(one.ids)
    for vid in one.ids:
        np.testing.assert_allclose(m.sequence(vid), one.sequence(vid), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(m.window_times(vid), one.window_times(vid))


def test_bad_videos_and_wrong_store(long_videos, tmp_path):
    _, samples = long_videos
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    items = [samples[0], Sample(str(junk), (), "junk"), Sample(str(tmp_path / "gone.mp4"), (), "gone")]
    stats = run(tiny(), items, tmp_path / "f", layers=["pool5"])
    ids = video_ids(items)
    assert stats.written == 1 and set(stats.bad) == set(ids[1:])
    fs = read_features(tmp_path / "f")
    assert "not a readable video" in fs.bad[ids[1]] and "not found" in fs.bad[ids[2]]
    with pytest.raises(ValueError, match="dense: stored"):  # another stride into the same store
        run(tiny(), items, tmp_path / "f", stride=4, layers=["pool5"])
    with pytest.raises(ValueError, match="holds no window sequences"):
        from p3d.representation.store import FeatureSet

        FeatureSet(ids=["a"], labels=np.zeros(1, np.int64), video={"pool5": np.zeros((1, 2), np.float32)}).sequence("a")


def test_extract_cli_dense(long_videos, tmp_path, capsys):
    gt, _ = long_videos
    root = Path(gt).parent
    base = [
        "extract", "activitynet", str(root), "--annotations", str(gt), "--subset", "validation", "-o",
        str(tmp_path / "s"), "--model", "p3d63", "--model-option", "width=4", "--model-option", "layers=[1,1,1,1]",
        "--num-classes", "3", "--clip-len", "8", "--size", "48", "--resize", "56", "56", "--layers", "pool5", "prob",
        "--workers", "1", "--batch-size", "8", "--no-progress",
    ]  # fmt: skip
    assert main([*base, "--dense", "--stride", "6", "--merge", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "3 video(s) written, 0 already done, 0 bad" in out and "windows/s" in out
    fs = read_features(tmp_path / "m.safetensors")
    assert fs.meta["dense"]["stride"] == 6 and fs.sequence(fs.ids[0], "prob").shape[1] == 3
    assert main([*base, "--dense", "--stride", "6"]) == 0
    assert "0 video(s) written, 3 already done" in capsys.readouterr().out
    for bad, msg in [
        (["--dense", "--stride", "0"], "--stride must be a whole number of frames >= 1, got 0"),
        (["--stride", "4"], "--stride and --last-window set the windows of --dense extraction; add --dense"),
        (["--dense", "--clip-level"], "--clip-level does not apply to --dense"),
    ]:
        assert main([*base, *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
