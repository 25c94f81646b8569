"""Each P3D block against the deploy prototxts, computed independently with NCDHW conv3d (reference.py)."""

import pytest
import torch

from p3d.models import P3DA, P3DB, P3DC, Bottleneck2D, SpatialConv, TemporalConv
from p3d.models.blocks import PointwiseConv
from p3d.models.layers import temporal_max_pool
from tests.models.reference import p3d_unit, randomize

KINDS = {"A": P3DA, "B": P3DB, "C": P3DC, "S": Bottleneck2D}


def _unit(kind, inplanes, planes, stride, style):
    down = None
    if stride != 1 or inplanes != planes * 4:
        down = torch.nn.Sequential(PointwiseConv(inplanes, planes * 4, stride), torch.nn.BatchNorm3d(planes * 4))
    m = KINDS[kind](inplanes, planes, stride, down, style)
    randomize(m, seed=hash((kind, stride, style)) % 1000)
    return m.eval()


@pytest.mark.parametrize("style", ["caffe", "pytorch"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["A", "B", "C", "S"])
def test_unit_matches_prototxt(kind, stride, style):
    m = _unit(kind, 16, 8, stride, style)
    x = torch.randn(2, 16, 4, 9, 10)  # odd spatial sizes exercise the strided paths
    with torch.no_grad():
        got = m(x)
        want = p3d_unit(x, m.state_dict(), "", kind, stride, style)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_block_types_really_differ():
    """Same weights, different wiring: A, B and C must compute different functions (a swapped block would pass
    a test that only checks shapes)."""
    x = torch.randn(1, 16, 4, 8, 8)
    outs = {}
    ref = _unit("A", 16, 4, 1, "caffe")
    for kind in "ABC":
        m = KINDS[kind](16, 4, 1, None, "caffe").eval()
        m.load_state_dict(ref.state_dict())
        with torch.no_grad():
            outs[kind] = m(x)
    assert not torch.allclose(outs["A"], outs["B"], atol=1e-4)
    assert not torch.allclose(outs["B"], outs["C"], atol=1e-4)
    assert not torch.allclose(outs["A"], outs["C"], atol=1e-4)


def test_c_averages_its_paths_not_sums():
    """P3D-C's res2c_branch2b_st has Eltwise coefficients 0.5, 0.5 (the port sums them)."""
    m = _unit("C", 8, 8, 1, "caffe")
    x = torch.randn(1, 8, 4, 6, 6)
    with torch.no_grad():
        s = m.S(x)
        t = m.T(s)
        torch.testing.assert_close(m.residual(x), torch.relu(0.5 * s + 0.5 * t))
        assert not torch.allclose(m.residual(x), torch.relu(s + t))


@pytest.mark.parametrize("kind", ["A", "B", "C", "S"])
def test_backward_through_every_block(kind):
    """In-place ops must not break autograd (a ReLU output saved for backward must not be modified)."""
    m = _unit(kind, 16, 4, 2, "caffe").train()
    x = torch.randn(2, 16, 4, 8, 8, requires_grad=True)
    m(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in m.parameters())


def test_spatial_and_temporal_conv_shapes_and_values():
    s = SpatialConv(3, 5, stride=2)
    t = TemporalConv(3, 5)
    assert tuple(s.weight.shape) == (5, 3, 1, 3, 3) and tuple(t.weight.shape) == (5, 3, 3, 1, 1)
    x = torch.randn(2, 3, 4, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(s(x), torch.nn.functional.conv3d(x, s.weight, None, (1, 2, 2), (0, 1, 1)))
        torch.testing.assert_close(t(x), torch.nn.functional.conv3d(x, t.weight, None, 1, (1, 0, 0)))
        xc = x.contiguous(memory_format=torch.channels_last_3d)  # the layout the trunk runs in
        torch.testing.assert_close(t(xc), torch.nn.functional.conv3d(x, t.weight, None, 1, (1, 0, 0)))


@pytest.mark.parametrize("t", [1, 2, 4, 8])
def test_temporal_max_pool_is_caffe_pooling3d(t):
    x = torch.randn(2, 3, t, 5, 6).contiguous(memory_format=torch.channels_last_3d)
    want = torch.nn.functional.max_pool3d(x, (2, 1, 1), (2, 1, 1), ceil_mode=True) if t > 1 else x
    torch.testing.assert_close(temporal_max_pool(x), want)


@pytest.mark.parametrize("conv_cls", [SpatialConv, TemporalConv, PointwiseConv])
def test_frozen_bn_folded_into_the_conv_gives_the_same_values_and_gradients(conv_cls):
    """conv_bn folds a BN that uses running statistics into the conv's kernel for the call: same function,
    same gradients (float64, so any difference would be a real one)."""
    from p3d.models.layers import conv_bn

    torch.manual_seed(0)
    conv = conv_cls(6, 5).double()
    bn = torch.nn.BatchNorm3d(5).double()
    randomize(bn, seed=4)
    bn.eval()
    x = torch.randn(2, 6, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    folded = conv_bn(conv, bn, x)
    (g_x, g_w, g_b) = torch.autograd.grad(folded.sin().sum(), [x, conv.weight, bn.weight])
    plain = bn(conv(x))
    (r_x, r_w, r_b) = torch.autograd.grad(plain.sin().sum(), [x, conv.weight, bn.weight])
    torch.testing.assert_close(folded, plain)
    torch.testing.assert_close(g_x, r_x)
    torch.testing.assert_close(g_w, r_w)
    torch.testing.assert_close(g_b, r_b)


@pytest.mark.parametrize("t", [2, 4, 8])
def test_temporal_max_pool_gradient(t):
    x = torch.randn(2, 3, t, 4, 5, dtype=torch.float64).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(temporal_max_pool, (x,))
    g = torch.randn(2, 3, t // 2, 4, 5, dtype=torch.float64)
    (got,) = torch.autograd.grad(temporal_max_pool(x), x, g)
    (want,) = torch.autograd.grad(torch.nn.functional.max_pool3d(x, (2, 1, 1)), x, g)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("frozen", [False, True])
def test_backward_stays_channels_last(frozen):
    """Every unit hands its gradient on in the trunk's layout: a contiguous NCDHW gradient would cost a layout
    copy at every conv (in-place ops on tracked views, or a global mean's backward, cause that)."""
    from p3d.models import create_model

    m = create_model("p3d63", width=4, layers=(2, 2, 2, 2), num_classes=3).train()
    if frozen:
        m.freeze_bn()
    layouts = []
    for _, unit in m.units():
        unit.register_forward_hook(
            lambda mod, inp, out: (
                out.register_hook(lambda g: layouts.append(g.is_contiguous(memory_format=torch.channels_last_3d)))
                and None
            )
        )
    torch.nn.functional.cross_entropy(m(torch.randn(2, 3, 16, 64, 64)), torch.tensor([0, 2])).backward()
    assert len(layouts) == 8 and all(layouts)


@pytest.mark.parametrize("style", ["caffe", "pytorch"])
@pytest.mark.parametrize("train", [False, True])
def test_conv3d_formulation_equals_views(style, train):
    """The one switch between the channels-last 2D-on-views convolutions and plain NCDHW conv3d: same function,
    same gradients (fp32, 1e-5), whole network, eval (BN folded) and training (BN batch statistics)."""
    from p3d.models import create_model
    from p3d.models.layers import conv_impl, use_conv_impl

    torch.manual_seed(3)
    model = create_model("p3d63", width=8, layers=(1, 2, 1, 1), num_classes=5, style=style, dropout=0.0)
    model.train(train)
    x = torch.randn(2, 3, 8, 40, 44)
    outs, grads = {}, {}
    for impl in ("views", "conv3d"):
        model.zero_grad()
        with use_conv_impl(impl):
            assert conv_impl("cpu") == impl
            y = model(x)
            y.square().sum().backward()
        outs[impl] = y.detach()
        grads[impl] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(outs["conv3d"], outs["views"], rtol=1e-5, atol=1e-5)
    for n in grads["views"]:
        torch.testing.assert_close(grads["conv3d"][n], grads["views"][n], rtol=1e-4, atol=1e-5, msg=n)
    assert conv_impl("cpu") == "views"  # restored


def test_conv_impl_switch_rejects_unknown_names():
    from p3d.models.layers import set_conv_impl

    with pytest.raises(ValueError, match="views"):
        set_conv_impl("cudnn")
