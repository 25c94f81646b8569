"""The P3D ResNet trunk: topology against the deploy files, shapes, validation, named layers, baselines."""

import re
from pathlib import Path

import pytest
import torch

from p3d.models import P3DResNet, clip_len_ok, count_layers, create_model, list_models, summarize
from tests.models.reference import p3d_unit, randomize


def _n_params(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_parameter_counts_match_official_topology():
    # Exact learnable-parameter counts of the deploy files' P3D-199 (issue 2).
    assert _n_params(create_model("p3d199", num_classes=487)) == 66_670_503
    assert _n_params(create_model("p3d199", num_classes=400)) == 66_492_240


@pytest.mark.parametrize("name,layers", [("p3d63", 63), ("p3d131", 131), ("p3d199", 199)])
def test_layer_counts(name, layers):
    assert count_layers(create_model(name, width=4)) == layers


def _prototxt_units(path: Path) -> tuple[list[str], str]:
    """Unit names and block types read from a deploy prototxt: B if T reads branch2a, C if an Eltwise with
    coefficient 0.5 joins S and T, A otherwise."""
    text = path.read_text()
    layers = re.findall(r'layer \{\s*name: "([^"]+)"\s*type: "([^"]+)"\s*((?:bottom: "[^"]+"\s*)*)', text)
    units, kinds = [], {}
    for name, _typ, bottoms in layers:
        m = re.fullmatch(r"res(\w+)_branch2b_t", name)
        if m:
            units.append(m.group(1))
            kinds[m.group(1)] = "B" if "branch2a" in bottoms else "A"
    for m in re.finditer(r'name: "res(\w+)_branch2b_st".*?coeff: ([\d.]+)', text, re.S):
        if float(m.group(2)) == 0.5:
            kinds[m.group(1)] = "C"
    return units, "".join(kinds[u] for u in units)


@pytest.mark.parametrize("file", ["deploy_p3d_resnet_sports1m.prototxt", "deploy_p3d_resnet_kinetics.prototxt"])
def test_unit_names_and_block_pattern_follow_the_deploy_file(file, official_p3d):
    units, kinds = _prototxt_units(official_p3d / file)
    model = create_model("p3d199", width=4)
    ours = [(n, u.kind) for n, u in model.units() if not n.startswith("res5")]
    assert [n for n, _ in ours] == ["res" + u for u in units]
    assert "".join(k for _, k in ours) == kinds
    assert kinds == ("ABC" * 16)[:47]


def test_pattern_cycles_over_one_global_counter():
    m = create_model("p3d63", width=4)
    assert "".join(u.kind for _, u in m.units()) == "ABCABCABCABCA" + "SSS"
    for p in "ABC":
        m = create_model("p3d63", width=4, pattern=p)
        assert "".join(u.kind for _, u in m.units()) == p * 13 + "SSS"


def test_whole_network_matches_unit_by_unit_reference():
    """The trunk wires stem, pools and units as the deploy file: check against the reference unit by unit."""
    torch.manual_seed(0)
    for style in ("caffe", "pytorch"):
        m = create_model("p3d63", width=4, layers=(2, 2, 2, 1), num_classes=5, style=style).eval()
        randomize(m, seed=1)
        sd = m.state_dict()
        x = torch.randn(2, 3, 16, 64, 64)
        with torch.no_grad():
            from tests.models.reference import bn, conv

            h = torch.relu(bn(conv(x, sd["conv1.weight"], (1, 2, 2), (0, 3, 3)), sd, "bn1"))
            if style == "caffe":
                h = torch.nn.functional.max_pool3d(h, (2, 3, 3), 2, 0, ceil_mode=True)
            else:
                h = torch.nn.functional.max_pool3d(h, (2, 3, 3), 2, (0, 1, 1))
            for i, layer in enumerate((m.layer1, m.layer2, m.layer3, m.layer4), start=1):
                if i > 1:
                    h = torch.nn.functional.max_pool3d(h, (2, 1, 1), (2, 1, 1), ceil_mode=True)
                for j, unit in enumerate(layer):
                    stride = 2 if i > 1 and j == 0 else 1
                    h = p3d_unit(h, sd, f"layer{i}.{j}.", unit.kind, stride, style)
            want = h.mean(dim=(2, 3, 4)) @ sd["fc.weight"].T + sd["fc.bias"]
            torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t,size", [(8, 160), (16, 160), (32, 160), (16, 224), (16, 299)])
def test_any_supported_clip_length_and_size(t, size):
    m = create_model("p3d63", width=4, num_classes=7).eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, t, size, size))
    assert y.shape == (2, 7)  # never a batch of 4 for 32 frames (the port's bug)


def test_32_frames_average_the_remaining_frames_in_pool5():
    m = create_model("p3d63", width=4, num_classes=3).eval()
    x = torch.randn(1, 3, 32, 64, 64)
    with torch.no_grad():
        res5 = m.forward_features(x)
        assert res5.shape[2] == 2
        torch.testing.assert_close(m(x), m.fc(res5.mean(dim=(2, 3, 4))))


def test_clip_length_rule():
    assert [t for t in range(1, 50) if clip_len_ok(t)] == [1, 2, 4, 8, 16, 32, 48]


@pytest.mark.parametrize(
    "shape,match",
    [
        ((3, 16, 64, 64), "5D clip batch"),
        ((1, 4, 16, 64, 64), "expected 3 input channels"),
        ((1, 64, 64, 16, 3), "expected 3 input channels"),
        ((1, 3, 12, 64, 64), "unsupported clip length T=12"),
        ((1, 3, 16, 16, 16), "at least 32"),
    ],
)
def test_bad_inputs_raise_clear_errors(shape, match):
    m = create_model("p3d63", width=4)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(shape))


def test_integer_input_is_refused():
    m = create_model("p3d63", width=4)
    with pytest.raises(ValueError, match="floating-point"):
        m(torch.zeros(1, 3, 16, 64, 64, dtype=torch.uint8))


def test_named_layers():
    m = create_model("p3d199", width=4, num_classes=6).eval()
    x = torch.randn(2, 3, 16, 160, 160)
    with torch.no_grad():
        out = m.forward_layers(x, ["res4b35", "res5c", "pool5", "logits", "prob"])
        assert out["res4b35"].shape == (2, 64, 2, 10, 10)  # last res4 unit, before res5a_pool
        assert out["res5c"].shape == (2, 128, 1, 5, 5)
        assert out["pool5"].shape == (2, 128)
        torch.testing.assert_close(out["logits"], m(x))
        torch.testing.assert_close(out["prob"].sum(1), torch.ones(2))
        torch.testing.assert_close(out["pool5"], m.forward_head(m.forward_features(x), pre_logits=True))
    assert m.res4_name == "res4b35" and create_model("p3d63", width=4).res4_name == "res4f"
    with pytest.raises(ValueError, match="unknown layer 'res9'"):
        m.forward_layers(x, ["res9"])


def test_pool5_is_2048_d_at_full_width():
    assert create_model("p3d63").num_features == 2048


def test_frame_level_2d_baseline_averages_per_frame_scores():
    m = create_model("resnet50_2d", width=4, layers=(1, 1, 1, 1), num_classes=5).eval()
    randomize(m, seed=3)
    x = torch.randn(2, 3, 6, 64, 64)  # any number of frames
    with torch.no_grad():
        clip = m(x)
        per_frame = torch.stack([m(x[:, :, i : i + 1]) for i in range(6)], dim=1)
    torch.testing.assert_close(clip, per_frame.mean(1), rtol=1e-4, atol=1e-5)
    assert not any(u.temporal for _, u in m.units())


def test_flow_model_takes_two_channels():
    m = create_model("p3d63", width=4, in_channels=2, num_classes=3).eval()
    assert m.input_spec.channels == 2 and m.input_spec.channel_order == "XY"
    with torch.no_grad():
        assert m(torch.randn(1, 2, 16, 64, 64)).shape == (1, 3)


def test_c3d_topology():
    m = create_model("c3d", num_classes=487)
    convs = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv3d)]
    assert len(convs) == 8 and all(c.kernel_size == (3, 3, 3) for _, c in convs)
    # 8 convs (3×3×3 + bias) + fc6 8192→4096 + fc7 + fc8, computed by hand from Tran et al. Table/Fig. 3.
    chans = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    expected = sum(chans[i] * chans[i + 1] * 27 + chans[i + 1] for i in range(8))
    expected += 8192 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 487 + 487
    assert _n_params(m) == expected
    small = create_model("c3d", width=4, fc_width=16, num_classes=3).eval()
    with torch.no_grad():
        out = small.forward_layers(torch.randn(2, 3, 16, 112, 112), ["pool5", "fc6", "logits"])
    assert out["pool5"].shape == (2, 32, 1, 4, 4) and out["fc6"].shape == (2, 16) and out["logits"].shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_runs_and_carries_its_input(name):
    opts = {"width": 4, "fc_width": 8} if name == "c3d" else {"width": 4, "layers": (1, 1, 1, 1)}
    m = create_model(name, num_classes=3, **opts).eval()
    spec = m.input_spec
    assert spec.clip_len == 16 and len(spec.mean) == spec.channels
    assert m.pretrained_cfg.architecture == name and m.pretrained_cfg.input is m.input_spec
    with torch.no_grad():
        y = m(torch.randn(1, spec.channels, spec.clip_len, *spec.size))
    assert y.shape == (1, 3)


def test_unknown_model_and_option_errors():
    with pytest.raises(ValueError, match="unknown model 'p3d200'"):
        create_model("p3d200")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_clases'\]"):
        create_model("p3d63", num_clases=10)
    with pytest.raises(ValueError, match="pattern"):
        create_model("p3d63", pattern="ABD")
    with pytest.raises(ValueError, match="style"):
        create_model("p3d63", style="tf")


def test_freeze_bn_keeps_only_the_first_trainable():
    m = create_model("p3d63", width=4, layers=(1, 1, 1, 1))
    m.freeze_bn()
    m.train()
    bns = {n: b for n, b in m.named_modules() if isinstance(b, torch.nn.BatchNorm3d)}
    assert bns["bn1"].training and bns["bn1"].weight.requires_grad
    assert all(not b.training and not b.weight.requires_grad for n, b in bns.items() if n != "bn1")
    before = bns["layer1.0.bn2"].running_mean.clone()
    m(torch.randn(2, 3, 8, 64, 64)).sum().backward()
    torch.testing.assert_close(bns["layer1.0.bn2"].running_mean, before)  # frozen statistics


def test_bf16_autocast_forward():
    m = create_model("p3d63", width=4, num_classes=3).eval()
    x = torch.randn(1, 3, 16, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    with torch.no_grad():
        ref = m(x)
    assert y.shape == (1, 3) and (y.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05


def test_summary_reports_flops_convention_and_layers():
    s = summarize(create_model("p3d199", num_classes=487), "p3d199")
    assert s.params == 66_670_503 and s.layers == 199 and s.flops == 2 * s.macs
    text = str(s)
    assert "66,670,503" in text and "199" in text and "multiply-adds" in text and "2 × MACs" in text


def test_model_is_a_plain_module_subclass():
    assert isinstance(create_model("p3d63", width=4), P3DResNet)


@pytest.mark.parametrize("name", ["p3d63", "c3d"])
def test_reset_classifier_replaces_the_head_and_the_config(name):
    opts = {"width": 4, "num_classes": 3} if name == "c3d" else {"width": 4, "layers": (1, 1, 1, 1), "num_classes": 3}
    m = create_model(name, **opts).eval()
    m.pretrained_cfg = m.pretrained_cfg.replace(class_names=("a", "b", "c"))
    spec = m.input_spec
    x = torch.randn(2, spec.channels, spec.clip_len, *spec.size)
    m.reset_classifier(7)
    assert m.num_classes == 7 and m.pretrained_cfg.num_classes == 7 and m.pretrained_cfg.class_names is None
    with torch.no_grad():
        assert m(x).shape == (2, 7)
    head = m.get_classifier()
    assert head.out_features == 7 and float(head.bias.abs().max()) == 0.0
    if name == "p3d63":
        m.reset_classifier(0)  # no head: the model gives pool5
        with torch.no_grad():
            assert m(x).shape == (2, m.num_features) and m.num_classes == 0
    with pytest.raises(ValueError):
        m.reset_classifier(-1)
