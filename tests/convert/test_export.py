"""Export with parity checks (ONNX in onnxruntime, TorchScript, torch.export)."""

from __future__ import annotations

import json

import pytest

from p3d.cli import main
from p3d.convert.export import export_model
from p3d.models import create_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_onnx_export_parity_and_metadata(tmp_path, capsys):
    from p3d.models.pretrained import save_pretrained

    tiny = create_model("p3d63", width=4, layers=(1, 1, 1, 1), num_classes=5)
    weights = tmp_path / "tiny.safetensors"
    save_pretrained(tiny, weights)
    out = tmp_path / "tiny.onnx"
    code = main(["export", "p3d63", "--pretrained", str(weights), "-o", str(out), "--clip-len", "8", "--size", "64"])
    assert code == 0
    text = capsys.readouterr().out
    assert "max |Δ|" in text and "opset 18" in text and "checked_batches [1, 2]" in text
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["p3d_config"])["input"]["clip_len"] == 16  # the model's spec, not the check clip
    result = export_model(tiny, tmp_path / "b.onnx", "onnx", (3, 3, 8, 64, 64), dynamic_batch=False)
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.max_abs_ref) and result.details["checked_batches"] == [3]


@pytest.mark.parametrize(("fmt", "suffix"), [("torchscript", "pt"), ("export", "pt2")])
def test_torchscript_and_torch_export(tmp_path, fmt, suffix):
    model = create_model("p3d63", width=8, layers=(1, 1, 1, 1), num_classes=5, in_channels=2)
    result = export_model(model, tmp_path / f"m.{suffix}", fmt, (2, 2, 8, 64, 64))
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.max_abs_ref) and result.path.stat().st_size > 0
