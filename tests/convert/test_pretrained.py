"""Converted files: embedded config and preprocessing, checksums, tags, loud mismatches, the convert command."""

from __future__ import annotations

import json

import pytest
import torch

from p3d.cli import main
from p3d.errors import WeightLoadError
from p3d.fileio import sha256_file
from p3d.models import create_model
from p3d.models import pretrained as P
from p3d.models.config import PretrainedCfg


@pytest.fixture
def converted(tmp_path, tiny_caffe):
    proto, caffemodel, x, env, _ = tiny_caffe
    out = tmp_path / "tiny.safetensors"
    assert main(["convert", str(caffemodel), "--prototxt", str(proto), "-o", str(out)]) == 0
    return out, x, env


def test_convert_command_writes_weights_with_their_preprocessing(converted):
    out, x, env = converted
    meta = P.read_metadata(out)
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["sha256"] == sha256_file(out) and side["options"] == meta.options
    assert meta.input.channel_order == "BGR" and meta.input.mean == (104.0, 117.0, 123.0)
    assert meta.extra["format"] == "caffe" and meta.architecture == "p3d63"
    model = create_model("p3d63", pretrained=str(out)).eval()  # options come from the file
    assert model.layers_cfg == (2, 2, 2, 1) and model.num_classes == 5
    assert model.input_spec == meta.input and model.input_spec.channel_order == "BGR"
    with torch.no_grad():
        logits = model(x).double()
    assert float((logits - env["fc_tiny"]).abs().max() / env["fc_tiny"].abs().max()) < 1e-5
    assert model.pretrained_cfg.file == str(out) and model.pretrained_cfg.input is model.input_spec


def test_fine_tuning_keeps_a_fresh_classifier(converted):
    out, _, _ = converted
    model = create_model("p3d63", pretrained=str(out), num_classes=3)
    assert model.fc.out_features == 3


def test_mismatches_and_corruption_are_loud(converted, tmp_path):
    out, _, _ = converted
    with pytest.raises(WeightLoadError, match=r"holds weights for 'p3d63', not 'p3d199'"):
        create_model("p3d199", pretrained=str(out))
    with pytest.raises(WeightLoadError, match=r"width: model 16, file 4"):
        create_model("p3d63", pretrained=str(out), width=16)
    with pytest.raises(WeightLoadError, match=r"pattern: model 'A', file 'ABC'"):
        create_model("p3d63", pretrained=str(out), pattern="A")
    raw = bytearray(out.read_bytes())
    raw[-3] ^= 0xFF
    out.write_bytes(bytes(raw))
    with pytest.raises(WeightLoadError, match="SHA-256 does not match"):
        create_model("p3d63", pretrained=str(out))


def test_tags(converted, tmp_path, monkeypatch):
    out, _, _ = converted
    assert {"p3d199.sports1m_rgb", "p3d199.kinetics400_rgb", "p3d199.kinetics400_flow"} <= set(P.list_pretrained())
    flow = P.get_pretrained_cfg("p3d199.kinetics400_flow")
    assert flow.options["in_channels"] == 2 and flow.input.mean == (128.0, 128.0) and flow.input.std == (1.0, 1.0)
    assert P.get_pretrained_cfg("p3d199.sports1m_rgb").num_classes == 487
    monkeypatch.setenv("P3D_PRETRAINED_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match=r"p3d convert ORIGINAL --tag p3d199\.kinetics400_rgb"):
        create_model("p3d199", pretrained="p3d199.kinetics400_rgb")
    # a tag for the tiny model, resolved from the pretrained directory, with a checksum
    meta = P.read_metadata(out)
    tag = PretrainedCfg("p3d63", meta.options, meta.input, tag="p3d63.tiny_test", source="test", description="tiny")
    monkeypatch.setitem(P.PRETRAINED, tag.tag, tag)
    monkeypatch.setenv("P3D_PRETRAINED_DIR", str(tmp_path))
    (tmp_path / "p3d63.tiny_test.safetensors").write_bytes(out.read_bytes())
    model = create_model("p3d63", pretrained="p3d63.tiny_test")
    assert model.pretrained_cfg.tag == "p3d63.tiny_test"
    P.register_pretrained("p3d63.tiny_test", tmp_path / "p3d63.tiny_test.safetensors", sha256="0" * 64)
    with pytest.raises(WeightLoadError, match="recorded for tag 'p3d63.tiny_test'"):
        create_model("p3d63", pretrained="p3d63.tiny_test")
    P._FILES.pop("p3d63.tiny_test", None)


def test_convert_refuses_a_tag_the_weights_do_not_fit(tiny_caffe, tmp_path, capsys):
    proto, caffemodel, *_ = tiny_caffe
    code = main(
        [
            "convert",
            str(caffemodel),
            "--prototxt",
            str(proto),
            "--tag",
            "p3d199.kinetics400_rgb",
            "-o",
            str(tmp_path / "t.safetensors"),
        ]
    )
    assert code == 2 and "differ from tag 'p3d199.kinetics400_rgb'" in capsys.readouterr().err
