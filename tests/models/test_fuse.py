"""BatchNorm folding for inference: the fused copy computes the eval-mode function of the original."""

import pytest
import torch
from torch import nn

from p3d.models import create_model, fold_bn, fuse_for_inference, list_models
from p3d.models.blocks import SpatialConv, TemporalConv
from tests.models.reference import randomize

P3D_MODELS = [n for n in list_models() if n != "c3d"]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("name", P3D_MODELS)
@pytest.mark.parametrize("style", ["caffe", "pytorch"])
def test_fused_equals_eval(name, style):
    model = create_model(name, width=8, layers=(1, 2, 2, 1), num_classes=7, style=style)
    randomize(model, seed=1)
    model.eval()
    x = torch.randn(2, 3, 8, 40, 40, generator=torch.Generator().manual_seed(2))
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fused.modules())
    with torch.no_grad():
        want = model.forward_layers(x, ["res3", "res5", "logits"])
        got = fused.forward_layers(x, ["res3", "res5", "logits"])
    for k in want:
        assert _rel_err(want[k], got[k]) < 1e-5, k


@pytest.mark.parametrize("pattern", ["A", "B", "C"])
def test_fused_single_type_and_original_untouched(pattern):
    model = create_model("p3d63", width=8, layers=(2, 1, 1, 1), num_classes=5, pattern=pattern, style="pytorch")
    randomize(model, seed=3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert model.training and not fused.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())
    x = torch.randn(1, 3, 16, 32, 48, generator=torch.Generator().manual_seed(4))
    model.eval()
    with torch.no_grad():
        assert _rel_err(model(x), fused(x)) < 1e-5


def test_fold_bn_single_pair_keeps_layout():
    for conv in (SpatialConv(4, 6), TemporalConv(4, 6)):
        bn = nn.BatchNorm3d(6).eval()
        with torch.no_grad():
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_()
        x = torch.randn(2, 4, 5, 7, 7).contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad():
            want = bn(conv(x))
            fold_bn(conv, bn)
            got = conv(x)
        assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fuse_rejects_other_models():
    with pytest.raises(TypeError, match="P3DResNet"):
        fuse_for_inference(create_model("c3d", width=4, fc_width=8))
