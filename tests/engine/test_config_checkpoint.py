from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import yaml

from p3d.engine import checkpoint as ck
from p3d.engine.config import TrainConfig, load_config, save_config


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=abc", r"optim.lr='abc': expected float"),
        ("optim.lr=nan", "must be finite"),
        ("optim.lr=-inf", "must be finite"),
        ("optim.lr=0", "must be > 0"),
        ("optim.iterations=ten", "optim.iterations='ten': expected int"),
        ("optim.iterations=1.5", "optim.iterations=1.5: expected int"),
        ("data.flip=maybe", "data.flip='maybe': expected bool"),
        ("data.flip=1", "data.flip=1: expected bool"),
        ("model.layers=5", "model.layers=5: expected list of int"),
        ("model.layers=[1,1,1]", "4 positive stage depths"),
        ("data.size=[160]", r"\[H, W\]"),
        ("model.dropout=1.0", r"in \[0, 1\)"),
        ("model.style=tf", "one of caffe, pytorch"),
    ],
)
def test_typed_values_are_checked_where_they_enter(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_text_stays_text_and_flags_keep_their_types(tmp_path):
    c = load_config(None, ["run.out_dir=2024-01-01", "data.split=val", "optim.lr=1e-3", "model.name=null"])
    assert c.run.out_dir == "2024-01-01" and c.data.split == "val" and c.optim.lr == 0.001 and c.model.name is None
    c = load_config(None, ["run.out_dir=runs/a: b"], flags={"optim.lr": 0.5, "data.size": [64, 48]})
    assert c.run.out_dir == "runs/a: b" and c.optim.lr == 0.5 and c.data.size == [64, 48]
    with pytest.raises(ValueError, match=r"--lr: optim.lr=nan"):
        load_config(None, flags={"optim.lr": float("nan")})
    f = tmp_path / "c.yaml"
    f.write_text('optim:\n  lr: "abc"\n')
    with pytest.raises(ValueError, match=r"c.yaml: optim.lr='abc': expected float"):
        load_config(f)


def test_print_config_lists_every_field_with_type_default_and_meaning():
    from dataclasses import fields

    from p3d.engine.config import SECTIONS, describe_config

    text = describe_config()
    for _section, cls in SECTIONS.items():
        for f in fields(cls):
            line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{f.name}:"))
            assert "(default " in line and "): " in line and len(line.split("): ", 1)[1]) > 5, line
    assert "  lr: 0.001  # float (default 0.001): base learning rate" in text


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.01\n  iterations: 50\nmodel:\n  name: p3d63\n")
    c = load_config(f, ["optim.lr=0.5", "model.layers=[1,1,1,1]", "run.amp=bf16", "model.dropout=0.9"])
    assert c.optim.lr == 0.5 and c.optim.iterations == 50 and c.model.name == "p3d63"
    assert c.model.layers == [1, 1, 1, 1] and c.run.amp == "bf16" and c.model.dropout == 0.9
    save_config(c, tmp_path / "run" / "config.yaml")
    again = TrainConfig.from_dict(yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()))
    assert again == c


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown key 'lrr'"),
        ("optim=1", "section.key"),
        ("nosection.x=1", "unknown key 'nosection'"),
        ("run.amp=fp8", "run.amp"),
        ("optim.lr=-1", "optim.lr"),
        ("noequals", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_bad_yaml_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("optim: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(f)
    f.write_text("optim:\n  nope: 1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.optim: unknown key 'nope'"):
        load_config(f)


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "ckpt.pt"
    ck.save_checkpoint(p, {"iteration": 1, "w": torch.ones(3)})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(p, {"iteration": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert ck.load_checkpoint(p)["iteration"] == 1
    assert [q.name for q in tmp_path.iterdir()] == ["ckpt.pt"]  # no temp file left behind


def test_latest_skips_a_corrupt_checkpoint(tmp_path):
    for it in (2, 4):
        ck.save_checkpoint(ck.checkpoint_path(tmp_path, it), {"iteration": it})
    newest = ck.checkpoint_path(tmp_path, 6)
    newest.write_bytes(ck.checkpoint_path(tmp_path, 4).read_bytes()[:100])  # truncated
    path, state = ck.latest_checkpoint(tmp_path)
    assert state["iteration"] == 4 and path.name == "ckpt-00000004.pt"
    with pytest.raises(ValueError, match="ckpt-00000006.pt: not a readable checkpoint"):
        ck.load_checkpoint(newest)
    ck.prune_checkpoints(tmp_path, keep=1)
    assert [i for i, _ in ck.list_checkpoints(tmp_path)] == [6]


def test_foreign_file_is_refused(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"state_dict": {}}, p)
    with pytest.raises(ValueError, match="not a `p3d train` checkpoint"):
        ck.load_checkpoint(p)
    assert not ck.is_train_checkpoint(p)


def test_rng_state_roundtrip_through_a_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    ck.save_checkpoint(tmp_path / "r.pt", {"rng": ck.rng_state()})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]
