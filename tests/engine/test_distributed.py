"""Two CPU processes under torchrun (gloo): training with DDP, checkpoint by rank 0, sharded testing, unreadable
videos counted once across ranks, and workers that end with their launcher."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from p3d.engine import checkpoint as ck
from p3d.engine.trainer import Trainer

from .conftest import BROKEN, tiny_config, write_yaml
from .test_trainer import _env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_cmd(*args: str, launcher: str = "torch.distributed.run") -> list[str]:
    return [sys.executable, "-m", launcher, "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_port()), "--module", "p3d", *args]  # fmt: skip


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_launch_cmd(*args), env=_env(), capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_train_and_test(broken_data, tmp_path):
    """Training on a list with two unreadable videos: batches of 1, 3 per iteration, 2 iterations = every rank's
    whole share of the 9 videos, so both broken files are met, by one rank or both; they count 2."""
    cfg = tiny_config(broken_data, tmp_path / "ddp", optim={"iterations": 2, "batch_size": 1}, model={"dropout": 0.0})
    r = _torchrun("train", "--config", str(write_yaml(cfg, tmp_path / "cfg.yaml")))
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert files == ["ckpt-00000002.pt"]  # one writer: no temp files, no per-rank copies
    state = ck.load_checkpoint(tmp_path / "ddp" / "checkpoints" / files[0])
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]  # rank 0 alone logs
    want = {str(broken_data / "UCF-101" / rel) for rel in BROKEN}
    assert set(state["skipped"]) == want and json.loads(lines[-1])["skipped_videos"] == 2
    assert set(json.loads((tmp_path / "ddp" / "skipped.json").read_text())["videos"]) == want

    # The trainer checks at the end that both ranks hold identical parameters (it fails the run otherwise);
    # here: the weights moved from their initialisation and stayed finite.
    init = Trainer(tiny_config(broken_data, tmp_path / "init", optim={"iterations": 1}))
    init._setup()
    moved = [
        k for k, v in init.model.state_dict().items() if v.is_floating_point() and not torch.equal(v, state["model"][k])
    ]
    assert "conv1.weight" in moved and "fc.weight" in moved
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())

    out = tmp_path / "test"
    r = _torchrun("test", str(tmp_path / "ddp" / "checkpoints" / files[0]), "--clips", "2", "--workers", "0",
                  "--max-videos", "5", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_videos"] == 5 and m["num_clips"] == 10  # the padded duplicate is not counted twice


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie nobody reaped yet has ended


@pytest.mark.parametrize(
    "launcher, sig, status",
    [("torch.distributed.run", signal.SIGKILL, None), ("p3d.launch", signal.SIGTERM, 128 + signal.SIGTERM)],
)
def test_workers_end_with_their_launcher(tiny_data, tmp_path, launcher, sig, status):
    """SIGKILL to plain torchrun (nothing can forward it): the workers notice, checkpoint and end within seconds.
    SIGTERM to p3d.launch: forwarded, the workers checkpoint, and the launcher exits 143 as documented."""
    cfg = tiny_config(tiny_data, tmp_path / "run", optim={"iterations": 100000, "batch_size": 1})
    cmd = _launch_cmd("train", "--config", str(write_yaml(cfg, tmp_path / "cfg.yaml")), launcher=launcher)
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):  # both ranks are training
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    workers = _children(proc.pid)
    assert len(workers) == 2 and all(_alive(w) for w in workers)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    deadline = time.monotonic() + 60
    while any(_alive(w) for w in workers):
        assert time.monotonic() < deadline, f"workers {[w for w in workers if _alive(w)]} outlived their launcher"
        time.sleep(0.1)
    if status is not None:
        assert proc.returncode == status, out
    _, state = ck.latest_checkpoint(tmp_path / "run" / "checkpoints")  # written on the way out
    assert state["iteration"] >= 2
