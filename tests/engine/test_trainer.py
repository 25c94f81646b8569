from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from p3d.engine import checkpoint as ck
from p3d.engine.trainer import DivergenceError, Trainer
from p3d.models import load_model

from .conftest import tiny_config, write_yaml


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_stopped_and_resumed_run_equals_uninterrupted_run(tiny_data, tmp_path):
    # 9 training videos, batches of 2 (4 per epoch), 3 per iteration: iteration 3 stops inside epoch 2.
    straight = Trainer(tiny_config(tiny_data, tmp_path / "a"))
    res = straight.fit()
    assert res.status == "completed" and res.iteration == 6

    first = Trainer(tiny_config(tiny_data, tmp_path / "b", optim={"iterations": 3}))
    first.fit()
    assert (first.epoch, first.position) == (2, 1)
    resumed = Trainer(tiny_config(tiny_data, tmp_path / "b", optim={"iterations": 6}), resume=True)
    resumed.fit()

    wa, wb = _weights(straight), _weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{k} differs after resume"
    ma = straight.optimizer.state_dict()["state"]
    mb = resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"]) for i in ma)
    # The weights moved (the comparison is not vacuous) and the lr was stepped at iteration 3.
    fresh = Trainer(tiny_config(tiny_data, tmp_path / "c", optim={"iterations": 1}))
    fresh._setup()
    assert any(not torch.equal(wa[k], v) for k, v in fresh.model.state_dict().items())
    # The resumed run's log continues where the checkpoint was, without duplicated iterations, and the lr used by
    # every iteration follows the step schedule across the resume (lr_step 3).
    log = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in log] == pytest.approx([0.05] * 3 + [0.005] * 3)


def test_bare_resume_keeps_the_runs_iteration_budget(tiny_data, tmp_path):
    Trainer(tiny_config(tiny_data, tmp_path / "r", optim={"iterations": 3})).fit()
    # nothing given again (a bare `p3d train --out RUN --resume`): the run's saved settings stand, budget included
    again = Trainer(tiny_config(tiny_data, tmp_path / "r", optim={"iterations": 50}), resume=True, given=())
    res = again.fit()
    assert res.iteration == 3 and again.cfg.optim.iterations == 3 and again.resume_changes == {}


def test_frozen_bn_stays_frozen_and_first_bn_trains(tiny_data, tmp_path):
    t = Trainer(tiny_config(tiny_data, tmp_path, optim={"iterations": 2}))
    t._setup()
    before = _weights(t)
    t.fit()
    after = _weights(t)
    assert torch.equal(before["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])
    assert torch.equal(before["layer1.0.bn1.weight"], after["layer1.0.bn1.weight"])
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_data, tmp_path, optim={"iterations": 5}, run={"ckpt_every": 2})
    t = Trainer(cfg)
    calls = {"n": 0}
    original = Trainer._loss

    def poisoned(self, logits, target):
        calls["n"] += 1
        loss = original(self, logits, target)
        return loss * float("nan") if calls["n"] > 3 * 3 else loss  # iteration 4 diverges

    monkeypatch.setattr(Trainer, "_loss", poisoned)
    with pytest.raises(DivergenceError, match=r"loss is nan at iteration 4.*ckpt-00000002\.pt"):
        t.fit()
    assert t.iteration == 3
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values() if v.is_floating_point())
    state = ck.load_checkpoint(tmp_path / "checkpoints" / "ckpt-00000002.pt")
    assert state["iteration"] == 2 and [i for i, _ in ck.list_checkpoints(tmp_path / "checkpoints")] == [2]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_grad_accumulation_and_validation(tiny_data, tmp_path, amp):
    cfg = tiny_config(
        tiny_data,
        tmp_path,
        optim={"iterations": 2, "accum_steps": 2},
        run={"amp": amp, "val_every": 2},
        model={"freeze_bn": False},
    )
    res = Trainer(cfg).fit()
    assert res.status == "completed"
    assert set(res.metrics) >= {"video_hit@1", "video_hit@5", "clip_hit@1"}
    assert res.metrics["num_videos"] == 6
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("val/video_hit@1" in r for r in lines)
    assert all(math.isfinite(r["loss"]) for r in lines if "loss" in r)
    model = load_model(tmp_path / "checkpoints" / "ckpt-00000002.pt")
    classes = list(model.pretrained_cfg.class_names)
    assert classes == ["MoveLeft", "MoveRight", "RotateCW"] and model.input_spec.clip_len == 8
    # the run folder and its final weights resolve to the same model and preprocessing
    for form in (tmp_path, tmp_path / "model.safetensors"):
        again = load_model(form)
        assert again.input_spec == model.input_spec and again.pretrained_cfg.class_names == tuple(classes)
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "model.safetensors").is_file()


def test_init_from_a_train_checkpoint_with_another_class_count(tiny_data, tmp_path):
    Trainer(tiny_config(tiny_data, tmp_path / "src", optim={"iterations": 1})).fit()
    src = tmp_path / "src" / "checkpoints" / "ckpt-00000001.pt"
    from p3d.engine.trainer import build_model

    cfg = tiny_config(tiny_data, tmp_path / "dst", model={"pretrained": str(src)})
    m = build_model(cfg, [f"c{i}" for i in range(7)])
    sd = ck.load_checkpoint(src)["model"]
    assert torch.equal(m.state_dict()["conv1.weight"], sd["conv1.weight"]) and m.fc.out_features == 7


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_sigterm_checkpoints_and_resume_finishes(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path / "run", optim={"iterations": 100000})
    f = write_yaml(cfg, tmp_path / "cfg.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "p3d", "train", "--config", str(f)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    # a second `p3d train` on the same run folder is refused at once, naming the first (before it reads any data)
    second = subprocess.run([sys.executable, "-m", "p3d", "train", "--config", str(f)], env=_env(),
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 75 and f"being written by pid {proc.pid} on host" in second.stderr, second.stderr
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "--resume" in out
    path, state = ck.latest_checkpoint(tmp_path / "run" / "checkpoints")
    stopped_at = state["iteration"]
    assert stopped_at >= 2
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "p3d",
            "train",
            "--out",
            str(tmp_path / "run"),
            "--resume",
            "--iterations",
            str(stopped_at + 1),
            "--no-progress",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert ck.latest_checkpoint(tmp_path / "run" / "checkpoints")[1]["iteration"] == stopped_at + 1


def test_the_default_configuration_trains_with_the_papers_protocol(tiny_data, tmp_path):
    """Defaults, as the trainer applies them (not constants compared with constants): SGD momentum 0.9, lr 0.001 ÷10
    every 60K iterations, 128 clips per optimizer step, every BatchNorm frozen except bn_conv1, 16-frame clips
    cropped to 160×160 from 182×242 with random flips."""
    from p3d.engine.config import TrainConfig

    cfg = TrainConfig()
    assert cfg.optim.batch_size * cfg.optim.accum_steps == 128
    cfg.update({"model": {"name": "p3d63", "width": 4, "layers": [1, 1, 1, 1]}, "data": {"root": str(tiny_data)}})
    cfg.update({"optim": {"batch_size": 2, "accum_steps": 64}})  # 9 tiny training videos: smaller passes, same 128
    cfg.update({"run": {"out_dir": str(tmp_path), "progress": False, "tensorboard": False}})
    t = Trainer(cfg)
    t._setup()
    (group,) = t.optimizer.param_groups
    assert isinstance(t.optimizer, torch.optim.SGD) and group["momentum"] == 0.9 and group["weight_decay"] == 1e-4
    lrs = {}
    for it in (0, 59_999, 60_000, 119_999, 120_000):
        t.iteration = it
        lrs[it] = t._set_lr()
    assert lrs == pytest.approx({0: 1e-3, 59_999: 1e-3, 60_000: 1e-4, 119_999: 1e-4, 120_000: 1e-5})
    assert cfg.optim.batch_size * cfg.optim.accum_steps * t.dist.world_size == 128
    frozen = [n for n, m in t.model.named_modules() if isinstance(m, torch.nn.BatchNorm3d) and not m.training]
    trained = [n for n, m in t.model.named_modules() if isinstance(m, torch.nn.BatchNorm3d) and m.training]
    assert trained == ["bn1"] and len(frozen) > 10
    spec, tf = t.dataset.spec, t.dataset.transform
    assert (spec.clip_len, spec.size, spec.resize) == (16, (160, 160), (182, 242)) and tf.train and tf.flip
    clip, _ = t.dataset[0]
    assert clip.shape == (3, 16, 160, 160)


def test_warmup_ramps_the_logged_learning_rate(tiny_data, tmp_path):
    cfg = tiny_config(tiny_data, tmp_path, optim={"iterations": 5, "warmup": 4, "lr_step": 100, "accum_steps": 1})
    Trainer(cfg).fit()
    log = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log] == pytest.approx([0.05 * k / 4 for k in (1, 2, 3, 4)] + [0.05])


def test_clip_grad_bounds_the_update(tiny_data, tmp_path):
    """With momentum's first step and no weight decay the update is lr × the clipped gradient: its norm is at
    most lr × clip_grad (it would be far larger unclipped)."""

    def update_norm(clip):
        sec = {"iterations": 1, "accum_steps": 1, "weight_decay": 0.0, "clip_grad": clip}
        t = Trainer(tiny_config(tiny_data, tmp_path / str(clip), optim=sec, model={"freeze_bn": False}))
        t._setup()
        before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
        t.fit()
        d = [(p.detach() - before[n]).flatten() for n, p in t.model.named_parameters()]
        return float(torch.cat(d).norm())

    assert update_norm(1e-3) <= 0.05 * 1e-3 * (1 + 1e-3)
    assert update_norm(None) > 0.05 * 1e-3 * 10


@pytest.mark.slow
def test_compiled_training_runs_and_matches_eager_loss(tiny_data, tmp_path):
    runs = {}
    for compile_ in (False, True):
        cfg = tiny_config(tiny_data, tmp_path / str(compile_), optim={"iterations": 2, "accum_steps": 1},
                          run={"compile": compile_}, model={"freeze_bn": False, "dropout": 0.0})  # fmt: skip
        Trainer(cfg).fit()
        runs[compile_] = [
            json.loads(x)["loss"] for x in (tmp_path / str(compile_) / "metrics.jsonl").read_text().splitlines()
        ]
    assert all(math.isfinite(v) for v in runs[True])
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-3)


def test_the_trained_input_spec_travels_to_every_output(tiny_data, tmp_path):
    """The data settings the model was trained with are its preprocessing in the checkpoint, the run's
    model.safetensors, the run folder, and an export's metadata: one config, no stale copy."""
    from p3d.convert.export import export_model

    t = Trainer(tiny_config(tiny_data, tmp_path, optim={"iterations": 1}, data={"clip_len": 8, "size": [32, 32]}))
    t.fit()
    want = t.model.input_spec
    assert (want.clip_len, want.size) == (8, (32, 32))
    assert t.model.pretrained_cfg.input is want
    for form in (t._last_ckpt, tmp_path / "model.safetensors", tmp_path):
        m = load_model(form)
        assert m.input_spec == want and m.pretrained_cfg.class_names == tuple(t.classes)
    pt = tmp_path / "m.pt"
    export_model(load_model(tmp_path), pt, "torchscript", (1, 3, 8, 32, 32))
    files = {"p3d_config.json": ""}
    torch.jit.load(str(pt), _extra_files=files)
    from p3d.spec import InputSpec

    assert InputSpec.from_dict(json.loads(files["p3d_config.json"])["input"]) == want
