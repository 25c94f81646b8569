"""Initialising P3D from a 2D ImageNet ResNet file (paper Sec. 3.3), and the load report."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from p3d.errors import WeightLoadError
from p3d.models import create_model, init_temporal, load_2d_resnet, read_state_dict
from tests.models.reference import ResNet2D, randomize

TINY = dict(layers=(2, 2, 3, 1), width=8)


def _resnet2d(style="pytorch", num_classes=10, seed=0):
    net = ResNet2D(layers=TINY["layers"], width=TINY["width"], num_classes=num_classes, style=style).eval()
    randomize(net, seed)
    return net


@pytest.mark.parametrize("style", ["caffe", "pytorch"])
@pytest.mark.parametrize("pattern", ["A", "B", "C", "ABC"])
def test_static_clip_equals_2d_resnet_at_init(tmp_path, pattern, style):
    """'identity' temporal init: pool5 of the fresh P3D on a static clip == 2D ResNet pool5 on that frame."""
    net = _resnet2d(style)
    path = tmp_path / "resnet.pth"
    torch.save(net.state_dict(), path)
    model = create_model("p3d63", pattern=pattern, style=style, num_classes=10, **TINY).eval()
    report = load_2d_resnet(model, path, temporal_init="identity")
    assert report.ok and not report.unexpected and "fc.weight" in report.loaded
    frame = torch.randn(2, 3, 96, 96)
    clip = frame.unsqueeze(2).expand(-1, -1, 16, -1, -1).contiguous()
    with torch.no_grad():
        got = model.forward_layers(clip, ["pool5", "logits"])
        torch.testing.assert_close(got["pool5"], net.pool5(frame), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["logits"], net(frame), rtol=1e-4, atol=1e-5)


def test_identity_init_still_learns_temporal_weights(tmp_path):
    net = _resnet2d()
    model = create_model("p3d63", num_classes=10, style="pytorch", **TINY)
    load_2d_resnet(model, net.state_dict())
    model.train()
    model(torch.randn(2, 3, 8, 64, 64)).sum().backward()
    grads = [u.conv_t.weight.grad for _, u in model.units() if u.temporal]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_paper_init_is_small_gaussian():
    model = create_model("p3d63", num_classes=10, **TINY)
    init_temporal(model, "paper", generator=torch.Generator().manual_seed(0))
    w = torch.cat([u.conv_t.weight.flatten() for _, u in model.units() if u.temporal])
    assert 0.0008 < w.std().item() < 0.0012 and abs(w.mean().item()) < 1e-4


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    net = _resnet2d()
    st = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, wrapped)
    for src in (st, wrapped):
        model = create_model("p3d63", num_classes=10, style="pytorch", **TINY).eval()
        load_2d_resnet(model, src)
        torch.testing.assert_close(model.layer2[0].conv2.weight[:, :, 0], net.layer2[0].conv2.weight)
        torch.testing.assert_close(model.layer3[1].bn3.running_var, net.layer3[1].bn3.running_var)


def test_fc_dropped_when_class_count_differs_and_conv1_inflated_for_flow():
    net = _resnet2d(num_classes=10)
    model = create_model("p3d63", num_classes=4, in_channels=2, **TINY)
    report = load_2d_resnet(model, net.state_dict())
    assert any(s.startswith("fc.weight") for s in report.skipped)
    assert "conv1.weight" in report.inflated
    want = net.conv1.weight.mean(1, keepdim=True).expand(-1, 2, -1, -1)
    torch.testing.assert_close(model.conv1.weight[:, :, 0], want)
    assert "skipped: fc.weight" in str(report)


def test_wrong_depth_is_a_loud_error_listing_keys():
    net = _resnet2d()
    model = create_model("p3d63", num_classes=10, layers=(2, 2, 4, 1), width=8)
    with pytest.raises(WeightLoadError, match=r"missing: layer3\.3\.conv1\.weight"):
        load_2d_resnet(model, net.state_dict())
    report = load_2d_resnet(model, net.state_dict(), strict=False)
    assert "layer3.3.conv1.weight" in report.missing


def test_wrong_width_lists_mis_shaped_keys():
    net = ResNet2D(layers=TINY["layers"], width=16, num_classes=10)
    model = create_model("p3d63", num_classes=10, **TINY)
    with pytest.raises(
        WeightLoadError, match=r"mis-shaped: conv1\.weight: model \[8, 3, 1, 7, 7\], file \[16, 3, 7, 7\]"
    ):
        load_2d_resnet(model, net.state_dict())


def test_bad_files_give_clear_errors(tmp_path):
    model = create_model("p3d63", num_classes=10, **TINY)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_2d_resnet(model, tmp_path / "nope.pth")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightLoadError, match="empty"):
        read_state_dict(empty)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WeightLoadError, match="junk.pth"):
        read_state_dict(junk)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightLoadError, match="bad.safetensors"):
        read_state_dict(bad_st)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    with pytest.raises(WeightLoadError, match="does not look like a 2D ResNet"):
        load_2d_resnet(model, other)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_needing_code_are_refused_not_executed(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": Evil()}, f)
    with pytest.raises(WeightLoadError, match="refusing to load"):
        read_state_dict(path)
    assert "this must never run" not in capsys.readouterr().out
