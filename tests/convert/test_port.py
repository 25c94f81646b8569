"""The PyTorch port's checkpoints: key mapping round trip, safe loading, auto-detection by load_pretrained."""

from __future__ import annotations

import pickle

import pytest
import torch

from p3d.convert.port import convert_port, p3d_key_to_port, p3d_to_port, port_architecture
from p3d.errors import WeightLoadError
from p3d.models import create_model


def _random_model(**options):
    model = create_model("p3d63", width=8, num_classes=7, **options)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    return model


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        torch.equal(sa[k], sb[k]) for k in sa if not k.endswith("num_batches_tracked")
    )


def test_port_names():
    assert p3d_key_to_port("conv1.weight") == "conv1_custom.weight"
    assert p3d_key_to_port("layer2.3.conv_t.weight") == "layer2.3.conv3.weight"
    assert p3d_key_to_port("layer2.3.bn3.running_var") == "layer2.3.bn4.running_var"
    assert p3d_key_to_port("layer4.1.conv2.weight") == "layer4.1.conv_normal.weight"
    assert p3d_key_to_port("layer4.0.downsample.1.bias") == "layer4.0.downsample.1.bias"
    assert p3d_key_to_port("fc.weight") == "fc.weight" and p3d_key_to_port("bn1.bias") == "bn1.bias"


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("in_channels", [3, 2])
def test_round_trip_through_a_port_checkpoint(tmp_path, legacy, in_channels):
    model = _random_model(in_channels=in_channels)
    sd = p3d_to_port(model.state_dict())
    assert "conv1_custom.weight" in sd and sd["layer4.0.conv_normal.weight"].dim() == 4
    assert sd["layer3.2.conv3.weight"].shape[2:] == (3, 1, 1)  # the port's conv3 is T
    path = tmp_path / "p3d_rgb_199.checkpoint.pth.tar"
    ckpt = {"epoch": 40, "arch": "P3D63", "best_prec1": 71.5, "state_dict": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    assert port_architecture(sd)["layers"] == [3, 4, 6, 3]
    converted, report = convert_port(path)
    assert report.ok and not report.unexpected and len(report.loaded) == len(sd)
    assert _same(model, converted)
    spec = converted.input_spec
    assert spec.channel_order == ("BGR" if in_channels == 3 else "XY") and spec.std == (1.0,) * in_channels
    # create_model recognises the port layout and converts on the fly
    loaded = create_model("p3d63", width=8, num_classes=7, in_channels=in_channels, pretrained=str(path))
    assert _same(model, loaded) and loaded.input_spec == spec


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/p3d_port_pickle_executed", "w"))


def test_pickle_that_needs_code_is_refused_not_executed(tmp_path):
    import os

    marker = "/tmp/p3d_port_pickle_executed"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pth.tar"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"conv1_custom.weight": torch.zeros(1)}, "x": _Evil()}, f)
    with pytest.raises(WeightLoadError, match=r"evil\.pth\.tar: refusing to load"):
        convert_port(path)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "opt": _Evil()}, path)
    with pytest.raises(WeightLoadError, match="refusing to load"):
        convert_port(path)
    assert not os.path.exists(marker)


def test_wrong_checkpoints_are_loud(tmp_path):
    model = _random_model()
    sd = p3d_to_port(model.state_dict())
    path = tmp_path / "x.pth"
    torch.save({"state_dict": {k: v for k, v in sd.items() if k != "conv1_custom.weight"}}, path)
    with pytest.raises(WeightLoadError, match="not a checkpoint of the PyTorch port"):
        convert_port(path)
    bad = dict(sd)
    bad["layer1.0.conv3.weight"] = bad["layer1.0.conv3.weight"][:, :4]
    torch.save({"state_dict": bad}, path)
    with pytest.raises(WeightLoadError, match=r"mis-shaped: layer1\.0\.conv_t\.weight"):
        convert_port(path)
    torch.save({"state_dict": sd}, path)
    with pytest.raises(WeightLoadError, match=r"do not fit the options asked for:\n  width: model 16, file 8"):
        create_model("p3d63", width=16, num_classes=7, pretrained=str(path))
