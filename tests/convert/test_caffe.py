"""Caffe import: the prototxt reader, the network analysis on the official deploy files, and conversions of
caffemodels built with protobuf, checked against an independent interpreter of the deploy net."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from p3d.convert.caffe import analyze_prototxt, caffe_layer_map, convert_caffe, read_caffemodel
from p3d.convert.prototxt import PrototxtError, parse_prototxt, read_prototxt
from p3d.errors import WeightLoadError
from tests.conftest import DEPLOY_FILES
from tests.convert.caffe_reference import parse_net, run_net, write_caffemodel
from tests.convert.conftest import make_caffe


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double().reshape(b.shape) - b).abs().max() / b.abs().max())


# ---- prototxt reader ---------------------------------------------------------------------------------------
def test_prototxt_syntax():
    m = parse_prototxt(
        'name: "n" # comment\nlayer { name: "a" type: "X" pad: 0 pad: 3 f: 1.5e-3 ok: true e:CAFFE }\n'
        'layer: { name: \'b\' s: "x" "y" v: [1, 2, 3] } neg: -4 hex: 0x10'
    )
    a, b = m.all("layer")
    assert m.get1("name") == "n" and a.all("pad") == [0, 3] and a.get1("f") == 1.5e-3 and a.get1("ok") is True
    assert a.get1("e") == "CAFFE" and b.get1("s") == "xy" and b.all("v") == [1, 2, 3]
    assert m.get1("neg") == -4 and m.get1("hex") == 16 and m.msg("absent") == {}
    with pytest.raises(PrototxtError, match=r"<prototxt>:2"):
        parse_prototxt('layer {\n name "x" }')
    with pytest.raises(PrototxtError, match="end of file"):
        parse_prototxt("layer { name: 'x'")


@pytest.mark.parametrize("which", ["kinetics", "sports1m"])
def test_prototxt_reader_agrees_with_protobuf_text_format(which, official_p3d):
    """Every layer's name, type, bottoms, tops and key parameters as google.protobuf.text_format reads them."""
    text = (official_p3d / DEPLOY_FILES[which]).read_text()
    ours = read_prototxt(official_p3d / DEPLOY_FILES[which]).all("layer")
    ref = parse_net(text).layer
    assert len(ours) == len(ref) == 693
    for a, b in zip(ours, ref, strict=True):
        assert (a.get1("name"), a.get1("type"), a.all("bottom"), a.all("top")) == (
            b.name,
            b.type,
            list(b.bottom),
            list(b.top),
        )
        if b.type == "Convolution":
            p = a.msg("convolution_param")
            assert p.all("kernel_size") == list(b.convolution_param.kernel_size)
            assert p.all("stride") == list(b.convolution_param.stride)
            assert p.all("pad") == list(b.convolution_param.pad)
        if b.type == "Eltwise":
            assert [float(c) for c in a.msg("eltwise_param").all("coeff")] == list(b.eltwise_param.coeff)


# ---- network analysis on the official files -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("which", "classes", "dropout", "params"), [("kinetics", 400, 0.5, 66_492_240), ("sports1m", 487, 0.1, 66_670_503)]
)
def test_official_deploy_analysis(which, classes, dropout, params, official_p3d):
    from p3d.models import P3DResNet

    net = analyze_prototxt(official_p3d / DEPLOY_FILES[which])
    assert net.depths == (3, 8, 36, 3) and net.pattern == "ABC" and net.style == "caffe"
    assert net.num_classes == classes and net.dropout == dropout and net.input_shape == (1, 3, 16, 160, 160)
    assert net.units[:4] == ["res2a", "res2b", "res2c", "res3a"] and net.units[-4:] == [
        "res4b35",
        "res5a",
        "res5b",
        "res5c",
    ]
    model = P3DResNet(**net.options())
    assert sum(p.numel() for p in model.parameters()) == params
    table = caffe_layer_map(model, net.fc_name)
    weighted = {n for n, layer in net.layers.items() if layer.get1("type") in ("Convolution", "BN", "InnerProduct")}
    assert set(table) == weighted and len(table) == 405
    # every parameter and buffer except num_batches_tracked is reached by exactly one Caffe layer
    keys = [
        f"{path}.{s}"
        for path, kind in table.values()
        for s in {
            "conv": ["weight"],
            "fc": ["weight", "bias"],
            "bn": ["weight", "bias", "running_mean", "running_var"],
        }[kind]
    ]
    assert sorted(keys) == sorted(k for k in model.state_dict() if not k.endswith("num_batches_tracked"))


def test_unsupported_wiring_is_rejected(tmp_path):
    proto, *_ = make_caffe(tmp_path)
    text = proto.read_text().replace(
        'bottom: "bn2b_branch2a"\n  top: "res2b_branch2b_t"', 'bottom: "bn2b_branch2b"\n  top: "res2b_branch2b_t"'
    )
    bad = tmp_path / "bad.prototxt"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"unit res2b: T reads 'bn2b_branch2b'.*\(1\.0, 1\.0\)|unit res2b"):
        analyze_prototxt(bad)
    text = proto.read_text().replace("    pad: 0\n    pad: 3\n    pad: 3\n", "    pad: 0\n    pad: 2\n    pad: 2\n", 1)
    bad.write_text(text)
    (tmp_path / "m.caffemodel").write_bytes(b"")
    with pytest.raises(ValueError, match=r"layer 'conv1' .*pad \(0, 2, 2\).*differs"):
        convert_caffe(tmp_path / "tiny.caffemodel", bad)


# ---- conversions against the interpreter ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kinds", "x_shape", "legacy", "eps"),
    [
        ("ABC", (1, 3, 8, 64, 64), False, None),
        ("BCA", (2, 2, 16, 64, 64), True, {"bn2a_branch2b": 1e-3, "bn5a_branch2c": 0.1, "bn_conv1": 1e-4}),
        ("C", (1, 3, 8, 96, 96), False, None),
    ],
)
def test_converted_model_matches_the_deploy_net(tmp_path, kinds, x_shape, legacy, eps):
    proto, caffemodel, x, env, blobs = make_caffe(tmp_path, x_shape=x_shape, kinds=kinds, eps=eps, legacy_shape=legacy)
    model, report, net = convert_caffe(caffemodel, proto)
    assert report.ok and not report.unexpected and not report.skipped
    assert len(report.loaded) == sum(len(b) for b in blobs.values())
    assert [u.kind for _, u in model.units()][:6] == [kinds[i % len(kinds)] for i in range(6)]
    assert model.in_channels == x_shape[1] and not model.training
    spec = model.input_spec
    if x_shape[1] == 3:
        assert (spec.channel_order, spec.mean, spec.std, spec.scale) == ("BGR", (104.0, 117.0, 123.0), (1.0,) * 3, 1.0)
    else:
        assert (spec.channel_order, spec.mean, spec.std, spec.channels) == ("XY", (128.0, 128.0), (1.0, 1.0), 2)
    assert (spec.clip_len, spec.size) == (x_shape[2], x_shape[3:])
    with torch.no_grad():
        out = model.forward_layers(x, ["pool1", "res2", "res3", "res4", "res5", "logits", "prob"])
    stage_last = {s: [u for u in net.units if u[3] == str(s)][-1] for s in (2, 3, 4, 5)}
    assert _rel(out["pool1"], env["pool1"]) < 1e-5
    for s in (2, 3, 4, 5):
        assert _rel(out[f"res{s}"], env[stage_last[s]]) < 1e-5, s
    assert _rel(out["logits"], env[net.fc_name]) < 1e-5
    assert float((out["prob"].double() - env["prob"]).abs().max()) < 1e-5
    # BN blob semantics: scale, shift, mean, var in that order
    bn = model.layer1[0].bn_t
    scale, shift, mean, var = (b.reshape(-1) for b in blobs["bn2a_branch2b_t"])
    assert np.array_equal(bn.weight.detach().numpy(), scale) and np.array_equal(bn.bias.detach().numpy(), shift)
    assert np.array_equal(bn.running_mean.numpy(), mean) and np.array_equal(bn.running_var.numpy(), var)


def test_reader_decodes_what_protobuf_wrote(tiny_caffe):
    _, caffemodel, _, _, blobs = tiny_caffe
    layers = read_caffemodel(caffemodel)
    assert set(layers) >= set(blobs)
    assert layers["conv1"].type == "Convolution" and layers["bn_conv1"].type == "BN"
    for name, arrays in blobs.items():
        assert len(layers[name].blobs) == len(arrays)
        for got, want in zip(layers[name].blobs, arrays, strict=True):
            assert got.shape == want.shape and np.array_equal(got, want)
    assert all(not layers[n].blobs for n in layers if n not in blobs)  # ReLU, Eltwise, pools: no blobs


# ---- failures are loud --------------------------------------------------------------------------------------
def _rewrite(tmp_path, proto, blobs, edit):
    net = parse_net(proto.read_text())
    b = {k: list(v) for k, v in blobs.items()}
    edit(b)
    path = tmp_path / "edited.caffemodel"
    write_caffemodel(net, b, path)
    return path


def test_missing_misshaped_and_malformed_layers_are_errors(tmp_path, tiny_caffe):
    proto, caffemodel, _, _, blobs = tiny_caffe
    path = _rewrite(tmp_path, proto, blobs, lambda b: b.pop("res3a_branch2b_t"))
    with pytest.raises(WeightLoadError, match=r"missing: layer2\.0\.conv_t\.weight \(Caffe layer 'res3a_branch2b_t'\)"):
        convert_caffe(path, proto)
    model, report, _ = convert_caffe(path, proto, strict=False)
    assert report.missing == ["layer2.0.conv_t.weight (Caffe layer 'res3a_branch2b_t')"]

    def transpose(b):
        b["res2b_branch2c"] = [np.ascontiguousarray(b["res2b_branch2c"][0].swapaxes(0, 1))]

    path = _rewrite(tmp_path, proto, blobs, transpose)
    with pytest.raises(
        WeightLoadError,
        match=r"mis-shaped: layer1\.1\.conv3\.weight: model \[16, 4, 1, 1, 1\], file \[4, 16, 1, 1, 1\]",
    ):
        convert_caffe(path, proto)
    path = _rewrite(tmp_path, proto, blobs, lambda b: b.__setitem__("bn2a_branch2a", b["bn2a_branch2a"][:3]))
    with pytest.raises(
        WeightLoadError, match=r"'bn2a_branch2a' has 3 blobs, expected 4 \(scale, shift, mean, variance\)"
    ):
        convert_caffe(path, proto)
    path = _rewrite(tmp_path, proto, blobs, lambda b: b["conv1"].append(np.zeros(4, np.float32)))
    with pytest.raises(WeightLoadError, match="'conv1' has 2 blobs, expected 1 .the P3D convolutions have no bias"):
        convert_caffe(path, proto)
    raw = caffemodel.read_bytes()
    trunc = tmp_path / "trunc.caffemodel"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(WeightLoadError, match=r"trunc\.caffemodel: not a readable \.caffemodel"):
        read_caffemodel(trunc)
    with pytest.raises(WeightLoadError, match="text prototxt, not a binary"):
        read_caffemodel(proto)


def test_unmapped_layer_is_an_error(tmp_path, tiny_caffe):
    """A caffemodel layer the prototxt/model does not know is reported, never dropped silently."""
    proto, _, _, _, blobs = tiny_caffe
    net = parse_net(proto.read_text())
    extra = net.layer.add(name="fc_extra", type="InnerProduct")
    extra.bottom.append("pool5")
    extra.top.append("fc_extra")
    b = dict(blobs)
    b["fc_extra"] = [np.zeros((3, 128), np.float32), np.zeros(3, np.float32)]
    path = tmp_path / "extra.caffemodel"
    write_caffemodel(net, b, path)
    with pytest.raises(WeightLoadError, match=r"unexpected: fc_extra \(InnerProduct, 2 blobs\)"):
        convert_caffe(path, proto)
    _, report, _ = convert_caffe(path, proto, strict=False)
    assert report.unexpected == ["fc_extra (InnerProduct, 2 blobs)"]


def test_v1_layers_format_is_read(tmp_path):
    """Pre-2015 caffemodels keep layers in NetParameter field 2 (V1LayerParameter: name 4, type enum 5, blobs 6)."""
    from google.protobuf.internal import encoder

    def field(num, payload: bytes) -> bytes:
        return encoder._VarintBytes(num << 3 | 2) + encoder._VarintBytes(len(payload)) + payload

    data = np.arange(6, dtype=np.float32)
    blob = field(7, field(1, b"".join(encoder._VarintBytes(d) for d in (2, 3)))) + field(5, data.tobytes())
    layer = field(4, b"fc") + encoder._VarintBytes(5 << 3) + encoder._VarintBytes(14) + field(6, blob)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(field(2, layer))
    layers = read_caffemodel(path)
    assert layers["fc"].type == "InnerProduct" and np.array_equal(layers["fc"].blobs[0], data.reshape(2, 3))
    path.write_bytes(field(2, field(1, b"\x0a\x01x")))
    with pytest.raises(WeightLoadError, match="obsolete V0 layer format"):
        read_caffemodel(path)


# ---- full size --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_full_p3d199_kinetics_conversion(tmp_path, official_p3d):
    """The real deploy file with random blobs: 66.5 M parameters, compared on an 8×160×160 clip (res5a_reshape
    fixes 160×160; 8 frames halve the cost and exercise Caffe's ceil rounding at res5a_pool)."""
    text = (official_p3d / DEPLOY_FILES["kinetics"]).read_text().replace("dim: 16", "dim: 8", 1)
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(text)
    net = parse_net(text)
    blobs: dict = {}
    x = torch.randn(1, 3, 8, 160, 160, generator=torch.Generator().manual_seed(1))
    env = run_net(net, x, blobs, np.random.default_rng(1))
    caffemodel = tmp_path / "p3d199.caffemodel"
    write_caffemodel(net, blobs, caffemodel)
    t0 = time.perf_counter()
    model, report, _ = convert_caffe(caffemodel, proto)
    seconds = time.perf_counter() - t0
    assert len(report.loaded) == 202 + 4 * 202 + 2 and report.ok and not report.unexpected
    with torch.no_grad():
        logits = model(x)
    assert _rel(logits, env["fc_kinetics"]) < 1e-4
    print(f"full P3D-199 conversion: {seconds:.1f} s for {caffemodel.stat().st_size / 2**20:.0f} MiB")
