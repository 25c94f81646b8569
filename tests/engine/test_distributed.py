"""Two CPU processes under torchrun (gloo): training with DDP, checkpoint by rank 0, sharded testing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import torch

from p3d.engine import checkpoint as ck
from p3d.engine.trainer import Trainer

from .conftest import tiny_config, write_yaml
from .test_trainer import _env


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_port()), "--module", "p3d", *args]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)


def test_torchrun_two_processes_train_and_test(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "ddp", optim={"iterations": 2, "batch_size": 1}, model={"dropout": 0.0})
    r = _torchrun("train", "--config", str(write_yaml(cfg, tmp_path / "cfg.yaml")))
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert files == ["ckpt-00000002.pt"]  # one writer: no temp files, no per-rank copies
    state = ck.load_checkpoint(tmp_path / "ddp" / "checkpoints" / files[0])
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2]  # rank 0 alone logs

    # The trainer checks at the end that both ranks hold identical parameters (it fails the run otherwise);
    # here: the weights moved from their initialisation and stayed finite.
    init = Trainer(tiny_config(tiny_data, tmp_path / "init", optim={"iterations": 1}))
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
