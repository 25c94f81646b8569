"""``p3d verify``: a store, a merged feature file, a run folder, a checkpoint and weights, intact and damaged."""

from __future__ import annotations

import json

import numpy as np
import torch

from p3d.cli import main
from p3d.engine import checkpoint as ck
from p3d.models import create_model
from p3d.models.pretrained import save_pretrained
from p3d.representation.store import FeatureWriter, list_parts, merge_features


def _flip(path, offset_from_end: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x08
    path.write_bytes(bytes(data))


def test_verify_a_store_names_the_damaged_part(tmp_path, capsys):
    store = tmp_path / "store"
    with FeatureWriter(store, {"model": "m"}, flush_every=2) as w:
        for i in range(5):
            w.add(f"v{i}", {"pool5": np.full(4, i, np.float32)})
        w.add_bad("broken", "no video stream")
    merged = merge_features(store, tmp_path / "merged.safetensors")
    assert main(["verify", str(store)]) == 0
    out = capsys.readouterr().out
    assert "feature store" in out and "3 file(s) checked: 3 intact" in out and "5 videos and 1 bad-video" in out
    assert main(["verify", str(merged)]) == 0 and "feature file" in capsys.readouterr().out

    parts = list_parts(store)
    _flip(parts[1])
    assert main(["verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED     {parts[1].name}: " in out and "2 intact, 1 damaged" in out
    assert "3 videos and 1 bad-video records in readable parts" in out  # what is still usable
    assert main(["verify", str(store), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [f["status"] for f in report["files"]] == ["intact", "damaged", "intact"] and not report["ok"]


def test_verify_a_run_folder_checkpoint_and_weights(tmp_path, capsys):
    run = tmp_path / "run"
    model = create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=3)
    for it in (1, 2):
        ck.save_checkpoint(ck.checkpoint_path(run / "checkpoints", it), {"iteration": it, "model": model.state_dict()})
    save_pretrained(model, run / "model.safetensors")
    assert main(["verify", str(run)]) == 0
    out = capsys.readouterr().out
    assert "run folder" in out and "3 file(s) checked: 3 intact" in out and "iteration 2" in out

    newest = ck.checkpoint_path(run / "checkpoints", 2)
    data = bytearray(newest.read_bytes())
    at = data.find(model.fc.weight.detach().numpy().tobytes())
    assert at > 0
    data[at + 7] ^= 0x01  # one weight, one bit
    newest.write_bytes(bytes(data))
    _flip(run / "model.safetensors")
    assert main(["verify", str(run)]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED     ckpt-00000002.pt" in out and "intact      ckpt-00000001.pt: iteration 1" in out
    assert "DAMAGED     model.safetensors: SHA-256 differs" in out
    assert main(["verify", str(newest)]) == 1 and "DAMAGED" in capsys.readouterr().out

    plain = tmp_path / "plain.safetensors"  # weights without a sidecar: readable, nothing to check against
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(plain))
    assert main(["verify", str(plain)]) == 0 and "unverified  plain.safetensors: 1 tensors" in capsys.readouterr().out
