"""Extraction under signals, a second writer, broken weights and a full disk (tiny model, tiny synthetic videos)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.data import build_samples, make_synthetic_dataset, video_ids
from p3d.models import create_model
from p3d.representation.extract import NONFINITE_LIMIT, build_meta, extract_features
from p3d.representation.store import FeatureWriter, list_parts, read_features
from p3d.spec import InputSpec

SPEC = InputSpec(clip_len=4, size=(32, 32), resize=(40, 40))
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_classes=3, videos_per_class=3, num_frames=12, size=(48, 48), seed=0)
    return root


@pytest.fixture(scope="module")
def samples(dataset):
    return build_samples("folder", dataset / "UCF-101")


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=SPEC).eval()


def run(model, samples, out, **kw):
    meta = build_meta(model, ["pool5"], num_clips=2, flip=False, map_pooling="max", class_names=None)
    kw = {"layers": ["pool5"], "num_clips": 2, "batch_size": 2, "num_workers": 0, "progress": False, **kw}
    return extract_features(model, samples, out, meta, **kw)


@pytest.fixture(scope="module")
def reference(samples, tmp_path_factory):
    """The uninterrupted run's features."""
    out = tmp_path_factory.mktemp("reference") / "f"
    run(tiny(), samples, out)
    return read_features(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_extraction_writes_the_pending_chunk(samples, reference, tmp_path, sig):
    """The signal arrives while videos are computed but not yet flushed (flush_every > all): they are written, the
    run says which signal stopped it, and a re-run completes the store with the same numbers."""
    model = tiny()
    batches = []

    def signal_at_the_third_batch(n):
        batches.append(n)
        if len(batches) == 3:
            os.kill(os.getpid(), sig)

    stats = run(model, samples, tmp_path / "f", on_batch=signal_at_the_third_batch, flush_every=1000)
    assert stats.stopped == sig and 1 <= stats.written < len(samples)
    kept = read_features(tmp_path / "f")
    assert len(kept) == stats.written and len(list_parts(tmp_path / "f")) == 1  # the pending chunk, written once
    again = run(model, samples, tmp_path / "f")
    assert again.stopped is None and again.skipped == stats.written
    full = read_features(tmp_path / "f")
    np.testing.assert_array_equal(full.video["pool5"][full.rows(reference.ids)], reference.video["pool5"])


def _sitecustomize(tmp_path: Path, body: str) -> dict[str, str]:
    """A subprocess environment whose Python runs ``body`` at start-up (sitecustomize): a deterministic place to
    deliver a real signal, or a simulated disk failure, to a real ``p3d`` process."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(textwrap.dedent(body))
    return {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{SRC}", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """The tiny model's weights in a file, so that separate processes extract with the same model."""
    from p3d.models.pretrained import save_pretrained

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_pretrained(tiny(), path)
    return path


def _extract_cmd(data: Path, out: Path, weights: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "p3d", "extract", str(data), "-o", str(out), "--weights", str(weights),
            "--num-clips", "2", "--batch-size", "2", "--workers", "0", "--no-progress", *extra]  # fmt: skip


def test_sigterm_to_p3d_extract_exits_143_with_the_pending_chunk_written(dataset, weights, tmp_path):
    env = _sitecustomize(
        tmp_path,
        """
        import os, signal
        import p3d.representation.store as store
        add = store.FeatureWriter.add
        def add_then_signal(self, *a, **k):
            out = add(self, *a, **k)
            if len(self.done) == 3:  # three videos computed, none flushed (--flush-every 100)
                os.kill(os.getpid(), signal.SIGTERM)
            return out
        store.FeatureWriter.add = add_then_signal
        """,
    )
    out = tmp_path / "store"
    cmd = _extract_cmd(dataset / "UCF-101", out, weights, "--flush-every", "100")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 128 + signal.SIGTERM, r.stdout + r.stderr
    assert "3 video(s) written" in r.stdout and "stopped by signal 15" in r.stdout
    assert len(read_features(out)) == 3


def test_a_second_p3d_extract_is_refused_naming_the_first(dataset, weights, tmp_path):
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    with FeatureWriter(out, {"model": "p3d63"}):  # this test process is writing rank 0 of the store
        r = subprocess.run(_extract_cmd(dataset / "UCF-101", out, weights), env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert r.returncode == 75, r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in line and str(out) in line
    assert list_parts(out) == []


def test_two_p3d_extract_at_once_with_different_flush_sizes_lose_nothing(dataset, reference, weights, tmp_path):
    """Whatever the timing: each run either finishes or is refused at once (exit 75); after re-running the refused
    one, every video is in the store exactly once, with the numbers of a single run."""
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmds = [_extract_cmd(dataset / "UCF-101", out, weights, "--flush-every", n) for n in ("1", "4")]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for (code, _, err), cmd in zip(results, cmds, strict=True):
        assert code in (0, 75), err
        if code == 75:
            assert "is being written by pid" in err
            assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    fs = read_features(out)
    assert sorted(fs.ids) == sorted(reference.ids) and fs.duplicates == 0
    got = fs.video["pool5"][fs.rows(reference.ids)]
    np.testing.assert_allclose(got, reference.video["pool5"], rtol=1e-5, atol=1e-6)  # other processes, threads


def test_nan_weights_are_refused_before_any_work(dataset, tmp_path, capsys):
    from p3d.models.pretrained import save_pretrained

    model = tiny()
    with torch.no_grad():
        model.fc.weight[0, 0] = float("nan")
    save_pretrained(model, tmp_path / "nan.safetensors")
    out = tmp_path / "store"
    code = main(["extract", str(dataset / "UCF-101"), "-o", str(out), "--weights", str(tmp_path / "nan.safetensors"),
                 "--num-clips", "2", "--workers", "0", "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "nan.safetensors: the weights hold non-finite values (NaN/inf in fc.weight)" in err
    assert list_parts(out) == []


def test_non_finite_features_one_video_bad_all_videos_stop(samples, tmp_path, monkeypatch):
    model = tiny()
    forward = type(model).forward_layers
    poisoned = {"every": False, "first": True}

    def forward_layers(self, x, names):
        out = forward(self, x, names)
        if poisoned["every"] or (poisoned["first"] and bool((x[0] == poison_clip[0]).all())):
            out = {k: v * float("nan") for k, v in out.items()}
        return out

    from p3d.data import VideoClipsDataset
    from p3d.data.transforms import to_model_input

    poison_clip = to_model_input(VideoClipsDataset([samples[4]], SPEC, num_clips=2, raw=True)[0]["clips"], SPEC)
    monkeypatch.setattr(type(model), "forward_layers", forward_layers)
    stats = run(model, samples, tmp_path / "one", batch_size=2)  # a batch is one video's 2 clips
    vid = video_ids(list(samples))[4]
    assert stats.bad == {vid: "non-finite features (layer pool5)"} and stats.nonfinite == 1
    fs = read_features(tmp_path / "one")
    assert len(fs) == len(samples) - 1 and fs.bad == stats.bad and np.isfinite(fs.video["pool5"]).all()

    poisoned["every"] = True
    with pytest.raises(ValueError, match=f"the first {NONFINITE_LIMIT} videos all gave non-finite features"):
        run(model, samples, tmp_path / "all")
    assert list_parts(tmp_path / "all") == []  # no bad records for a broken model


def test_a_full_disk_during_extract_is_one_line_naming_the_part_and_what_is_kept(
    dataset, weights, tmp_path, monkeypatch, capsys
):
    real_replace = os.replace
    parts = []

    def fill_after_one_part(src, dst):
        if "part-" in str(dst):
            if parts:
                raise OSError(errno.ENOSPC, "No space left on device")
            parts.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fill_after_one_part)
    out = tmp_path / "store"
    code = main(_extract_cmd(dataset / "UCF-101", out, weights, "--flush-every", "2")[3:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 74 and len(err) == 1, err
    assert "part-r0000-000001-" in err[0] and "no space left on the device" in err[0]
    assert err[0].endswith("kept: 2 video(s) in 1 complete part(s) of this run, and every earlier part")
    monkeypatch.undo()
    assert len(read_features(out)) == 2


def test_outputs_are_checked_writable_before_the_work(dataset, tmp_path, monkeypatch, capsys):
    import p3d.commands._args as args_mod
    import p3d.data.check as check_mod
    from p3d import fileio

    def read_only(path, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    def no_work(*a, **k):
        raise AssertionError("the work started before the output folder was checked")

    monkeypatch.setattr(fileio, "open", read_only, raising=False)
    monkeypatch.setattr(args_mod, "model_from_args", no_work)
    monkeypatch.setattr(check_mod, "check_samples", no_work)
    monkeypatch.setattr("p3d.commands.check_data.check_samples", no_work)
    for argv in (
        ["extract", str(dataset / "UCF-101"), "-o", str(tmp_path / "s"), "--model", "p3d63"],
        ["check-data", str(dataset / "UCF-101"), "--write-clean", str(tmp_path / "c" / "clean.csv")],
        ["export", "p3d63", "-o", str(tmp_path / "e" / "m.onnx")],
    ):
        assert main(argv) == 74, argv
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "writing failed: read-only file system" in line and str(tmp_path) in line
