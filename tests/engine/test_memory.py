"""The memory estimate: close to what a forward (and training) pass really takes, linear in the clip's pixels and
the batch, and checked before anything large is allocated (trainer, test, extraction, decoding)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from p3d.engine.memory import (
    MemoryEstimate,
    activation_bytes,
    available_memory,
    check_memory,
    estimate_inference,
    estimate_training,
    format_bytes,
)
from p3d.errors import MemoryLimitError
from p3d.models import create_model

REPO = Path(__file__).resolve().parents[2]

# A child process measures the real peak: VmHWM (the resident high-water mark, reset through clear_refs) minus the
# resident size just before the pass, the input already allocated.
_MEASURE = """
import json, sys, torch
from pathlib import Path
from p3d.models import create_model
from p3d.engine.inference import for_inference
from p3d.malloc import release_memory
torch.set_num_threads(2)
train = sys.argv[1] == "train"
model = create_model("p3d63", width=16, layers=[1, 1, 1, 1], num_classes=10)
x = torch.zeros(4, 3, 16, 112, 112)
net = model.train() if train else for_inference(model)
net(x[:1]).sum() if train else None  # warm-up: oneDNN state
release_memory()  # the heap the warm-up freed goes back to the OS, so the pass below must fault its pages in
def status(key):
    line = next(ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith(key))
    return int(line.split()[1]) * 1024
Path("/proc/self/clear_refs").write_text("5")
before = status("VmRSS:")
if train:
    net(x).sum()  # the graph holds what backward needs until the statement ends
else:
    with torch.inference_mode():
        net(x)
print(json.dumps({"peak": status("VmHWM:") - before}))
"""


def _measured_peak(mode: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", _MEASURE, mode], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])["peak"]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resident high-water mark")
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_activation_estimate_is_close_to_the_measured_peak(mode):
    """The narrow-copy estimate (width 8, 32 px, scaled to width 16 and 112 px) against the resident memory a real
    pass adds: within a factor of two either way."""
    model = create_model("p3d63", width=16, layers=[1, 1, 1, 1], num_classes=10)
    est = 4 * activation_bytes(model, (3, 16, 112, 112), train=mode == "train")
    real = _measured_peak(mode)
    assert real > 20 * 2**20  # a measurable pass: the conv1 output alone is 4×16×16×56×56×4 B = 12.25 MiB
    assert 0.5 < est / real < 2.0, (format_bytes(est), format_bytes(real))


def test_estimates_are_linear_in_pixels_and_batch_and_count_decoding():
    model = create_model("p3d63", width=8, layers=[1, 1, 1, 1], num_classes=5)
    a = activation_bytes(model, (3, 8, 64, 64))
    assert activation_bytes(model, (3, 8, 128, 128)) == pytest.approx(4 * a, rel=1e-6)
    assert activation_bytes(model, (3, 16, 64, 64)) == pytest.approx(2 * a, rel=1e-6)
    # the first convolution's output (8 channels, stride 2, float32) is alive at the peak: a lower bound
    assert a >= 8 * 8 * 32 * 32 * 4
    spec = model.input_spec.replace(clip_len=8, size=(64, 64), resize=(72, 96))
    one = estimate_inference(model, spec, batch_size=1, num_clips=5, num_workers=0)
    ten = estimate_inference(model, spec, batch_size=10, num_clips=5, num_workers=0)
    assert ten.parts["activations"] == pytest.approx(10 * one.parts["activations"], rel=1e-6)
    assert one.parts["input"] == 3 * 8 * 64 * 64 * 4
    shipped, decoded = 8 * 64 * 64 * 3, 8 * 72 * 96 * 3
    assert one.host["decode buffers"] == 5 * shipped + 5 * decoded  # in-process: one video decoded and queued
    two = estimate_inference(model, spec, batch_size=1, num_clips=5, flip=True, num_workers=2)
    assert two.host["decode buffers"] == (1 + 2 * 2) * 10 * shipped + 2 * 5 * decoded
    tr = estimate_training(model, spec, batch_size=4, num_workers=0)
    assert tr.parts["activations"] == 4 * activation_bytes(model, (3, 8, 64, 64), train=True)
    assert tr.parts["activations"] > 4 * a  # training keeps what backward needs


def test_the_papers_settings_fit_an_ordinary_machine():
    """Never refused where they run: P3D-199 testing (8 clips of 16×160×160 per pass, 20 per video) needs well
    under 4 GiB, training (16 clips per pass) under 16 GiB."""
    model = create_model("p3d199", num_classes=101)
    test = estimate_inference(model, batch_size=8, num_clips=20, num_workers=0)
    train = estimate_training(model, batch_size=16, num_workers=0)
    total = [sum(e.parts.values()) + sum(e.host.values()) for e in (test, train)]
    assert 0.5 * 2**30 < total[0] < 4 * 2**30 and 4 * 2**30 < total[1] < 16 * 2**30, [format_bytes(t) for t in total]


def test_check_memory_names_the_estimate_and_the_limit(monkeypatch):
    est = MemoryEstimate(torch.device("cpu"), {"activations": 3 * 2**30}, {"decode buffers": 2**29}, "8 clips")
    monkeypatch.setenv("P3D_MEMORY_LIMIT", "2G")
    assert available_memory("cpu") == (2 * 2**30, "P3D_MEMORY_LIMIT")
    with pytest.raises(MemoryLimitError) as e:
        check_memory(est, "testing")
    msg = str(e.value)
    assert msg.startswith("testing needs about 3.5 GiB of host memory")
    assert "activations 3.0 GiB, decode buffers 512.0 MiB; 8 clips" in msg and "2.0 GiB is available" in msg
    monkeypatch.setenv("P3D_MEMORY_LIMIT", "4096M")
    check_memory(est)  # fits
    monkeypatch.setenv("P3D_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="P3D_MEMORY_LIMIT='lots'"):
        available_memory("cpu")
    monkeypatch.delenv("P3D_MEMORY_LIMIT")
    free = available_memory("cpu")
    assert free is None or 0 < free[0] < 2**50


def test_trainer_refuses_before_reading_a_video(tiny_data, tmp_path, caplog):
    """A crop no machine can hold: refused with the estimate, and no video is reported unreadable."""
    from p3d.engine import Trainer
    from tests.engine.conftest import tiny_config

    cfg = tiny_config(tiny_data, tmp_path / "run", data={"size": [30000, 30000], "resize": [30000, 30000]})
    with pytest.raises(MemoryLimitError, match="training needs about .* GiB of host memory"):
        Trainer(cfg).fit()
    assert "unreadable" not in caplog.text and not (tmp_path / "run" / "checkpoints").exists()


def test_test_and_extraction_refuse_before_decoding(tiny_data, tmp_path, monkeypatch):
    from p3d.data import VideoReader, build_samples
    from p3d.engine import evaluate_videos
    from p3d.representation.extract import build_meta, extract_features

    def no_decoding(*a, **k):
        raise AssertionError("a video was decoded")

    monkeypatch.setattr(VideoReader, "get_frames", no_decoding)
    model = create_model("p3d63", width=4, layers=[1, 1, 1, 1], num_classes=3)
    samples = build_samples("ucf101", tiny_data, subset="test")
    with pytest.raises(MemoryLimitError, match="testing needs about"):
        evaluate_videos(model, samples, num_clips=10**9, num_workers=0)
    model.input_spec = model.input_spec.replace(size=(20000, 20000), resize=(20000, 20000))
    meta = build_meta(model, ["pool5"], num_clips=2, flip=False, map_pooling="max", class_names=None)
    with pytest.raises(MemoryLimitError, match="feature extraction needs about"):
        extract_features(model, samples, tmp_path / "store", meta, num_clips=2, num_workers=0, progress=False)
    assert not (tmp_path / "store").exists()


def test_running_out_of_memory_while_decoding_is_not_an_unreadable_video(tiny_data, monkeypatch):
    from p3d.data import VideoClipsDataset, VideoReader, build_samples

    def oom(*a, **k):
        raise MemoryError

    monkeypatch.setattr(VideoReader, "get_frames", oom)
    spec = create_model("p3d63", width=4).input_spec.replace(clip_len=8, size=(32, 32), resize=(40, 40))
    ds = VideoClipsDataset(build_samples("ucf101", tiny_data, subset="test"), spec, num_clips=2, raw=True)
    with pytest.raises(MemoryError):
        ds[0]
    assert ds.num_failed == 0
