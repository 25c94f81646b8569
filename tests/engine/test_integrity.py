"""Training runs that are resumed with other settings, meet unreadable videos, run out of disk, or whose checkpoints
are damaged (tiny model, tiny synthetic data)."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket

import numpy as np
import pytest
import torch

from p3d.cli import main
from p3d.engine import checkpoint as ck
from p3d.engine.trainer import Trainer
from p3d.errors import IntegrityError, OutputLockedError
from p3d.fileio import OutputLock
from p3d.models import load_model

from .conftest import BROKEN, tiny_config, write_yaml


def _log(run) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_applies_a_new_lr_and_logs_it(tiny_data, tmp_path, caplog):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_data, run, optim={"iterations": 3})).fit()  # lr 0.05, divided by 10 every 3
    caplog.set_level(logging.INFO, logger="p3d.engine.trainer")
    code = main(["train", "--out", str(run), "--resume", "--lr", "0.5", "--iterations", "6", "--no-progress"])
    assert code == 0
    # iterations 4-6 use the new base lr on the unchanged schedule: 0.5 × 0.1
    assert [r["lr"] for r in _log(run)] == pytest.approx([0.05] * 3 + [0.05] * 3)
    assert [r["iteration"] for r in _log(run)] == [1, 2, 3, 4, 5, 6]
    assert "resume: optim.lr changed from 0.05 to 0.5" in caplog.text
    state = ck.load_checkpoint(run / "checkpoints" / "ckpt-00000006.pt")
    assert state["config"]["optim"]["lr"] == 0.5 and state["config"]["model"]["width"] == 4
    assert state["history"] == [{"iteration": 3, "changed": {"optim.lr": [0.05, 0.5], "optim.iterations": [3, 6]}}]


@pytest.fixture(scope="module")
def one_iteration_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("one") / "run"
    Trainer(tiny_config(tiny_data, run, optim={"iterations": 1})).fit()
    return run


@pytest.mark.parametrize(
    "flags, refused",
    [
        (["--width", "16"], "model.width 4 -> 16 (the checkpoint's weights are this architecture"),
        (["--batch-size", "4"], "optim.batch_size 2 -> 4 (batch size and accumulation steps define the saved data"),
        (["--seed", "3"], "run.seed 0 -> 3 (the seed fixes the data order"),
        (["--clip-len", "4"], "data.clip_len 8 -> 4 (the classifier and the saved data position refer to"),
    ],
)
def test_resume_refuses_settings_that_define_the_run(one_iteration_run, capsys, flags, refused):
    run = one_iteration_run
    before = sorted((run / "checkpoints").iterdir())
    assert main(["train", "--out", str(run), "--resume", "--iterations", "2", "--no-progress", *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert refused in line and "ckpt-00000001.pt: cannot resume with" in line
    assert sorted((run / "checkpoints").iterdir()) == before  # nothing ran


def test_a_second_trainer_on_a_run_folder_is_refused(tiny_data, tmp_path, capsys):
    cfg = tiny_config(tiny_data, tmp_path / "run", optim={"iterations": 1})
    with OutputLock(tmp_path / "run", what="this run folder"):  # as another p3d train would hold it
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
            Trainer(cfg).fit()
        assert main(["train", "--config", str(write_yaml(cfg, tmp_path / "c.yaml"))]) == 75
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "run: this run folder is being written by pid" in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unreadable_videos_are_counted_per_file_and_survive_resume(broken_data, tmp_path):
    """Batches of 1 and 3 per iteration: the 9 training videos are each drawn once in iterations 1-3, again in 4-6.
    The two broken ones count 2 (not the number of failed draws), also right after resuming."""
    run = tmp_path / "run"
    cfg = {"optim": {"iterations": 3, "batch_size": 1}}
    first = Trainer(tiny_config(broken_data, run, **cfg))
    first.fit()
    assert first.dataset.num_skipped >= 2
    want = {str(broken_data / "UCF-101" / rel) for rel in BROKEN}
    again = Trainer(tiny_config(broken_data, run, optim={"iterations": 6, "batch_size": 1}), resume=True)
    again.fit()
    log = _log(run)
    assert [r["skipped_videos"] for r in log][2:] == [2, 2, 2, 2]  # from iteration 3 on; 4 is the first resumed
    listed = json.loads((run / "skipped.json").read_text())
    assert listed["count"] == 2 and set(listed["videos"]) == want
    assert all("not a readable video" in why for why in listed["videos"].values())
    state = ck.load_checkpoint(run / "checkpoints" / "ckpt-00000006.pt")
    assert set(state["skipped"]) == want


def test_a_full_disk_during_training_names_the_file_and_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch,
                                                                                  capsys):  # fmt: skip
    cfg = tiny_config(tiny_data, tmp_path / "run", optim={"iterations": 6}, run={"ckpt_every": 2})
    real_replace = os.replace

    def full_after_the_first_checkpoint(src, dst):
        if "ckpt-" in str(dst) and "ckpt-00000002" not in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_after_the_first_checkpoint)
    assert main(["train", "--config", str(write_yaml(cfg, tmp_path / "c.yaml"))]) == 74
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "ckpt-00000004.pt: writing failed: no space left on the device" in line
    assert line.endswith("kept: the last good checkpoint " + str(tmp_path / "run" / "checkpoints" / "ckpt-00000002.pt"))
    assert ck.load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt-00000002.pt")["iteration"] == 2


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and (a == b or (a != a and b != b))


def test_a_flipped_byte_in_a_checkpoint_is_detected_and_named(tiny_data, tmp_path):
    """Bytes spread over the whole file (zip headers, pickled structure, tensor data) and every byte of one
    weight tensor: each change is one error naming the file, or the state read is exactly the one written."""
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_data, run, optim={"iterations": 2}, run={"ckpt_every": 1, "keep_checkpoints": 5})).fit()
    path = run / "checkpoints" / "ckpt-00000002.pt"
    original = path.read_bytes()
    good = ck.load_checkpoint(path)
    weight = good["model"]["fc.weight"].numpy().tobytes()
    start = original.find(weight)
    assert start > 0
    positions = sorted(set(range(0, len(original), max(1, len(original) // 150))) | set(range(start, start + 32)))
    rng = np.random.default_rng(0)
    detected = 0
    fd = os.open(path, os.O_RDWR)
    try:
        for pos in positions:
            os.pwrite(fd, bytes([original[pos] ^ int(rng.integers(1, 256))]), pos)
            try:
                state = ck.load_checkpoint(path)
            except ValueError as e:  # IntegrityError, or "not a p3d train checkpoint" when the marker changed
                assert path.name in str(e) and "\n" not in str(e), (pos, str(e))
                detected += 1
            else:
                assert _equal(state, good), f"byte {pos} changed the checkpoint silently"
            os.pwrite(fd, original[pos : pos + 1], pos)
    finally:
        os.close(fd)
    assert detected >= 32  # every byte of the weight tensor at least
    # the newest checkpoint damaged: resuming and the weights resolver fall back to the previous one, naming it
    damaged = bytearray(original)
    damaged[start + 5] ^= 0x40
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match=f"{path.name}: damaged: its content differs from the SHA-256"):
        ck.load_checkpoint(path)
    with pytest.raises(IntegrityError, match=path.name):
        load_model(path)
    found, state = ck.latest_checkpoint(run / "checkpoints")
    assert found.name == "ckpt-00000001.pt" and state["iteration"] == 1
    assert torch.equal(load_model(run).fc.weight, state["model"]["fc.weight"])


def test_predict_json_gives_the_reason_of_an_unreadable_video(one_iteration_run, tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 64)
    assert main(["predict", str(junk), "--weights", str(one_iteration_run), "--json", "--clips", "2"]) == 1
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert record["video"] == str(junk) and "not a readable video" in record["error"]
