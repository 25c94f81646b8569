"""The README's two-stream chain through the CLI entry: `p3d flow` -> `p3d train --modality flow` -> `p3d test`
with late fusion (and the same models in `p3d predict` and `p3d extract --flow-from-rgb`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from p3d.cli import main
from p3d.data.flowfile import FlowReader
from p3d.data.synthetic import make_synthetic_dataset
from p3d.engine.fusion import load_scores

TINY = ["--width", "8", "--layers", "1", "1", "1", "1", "--clip-len", "4", "--size", "32", "32", "--resize", "32",
        "40", "--iterations", "2", "--batch-size", "2", "--accum-steps", "1", "--workers", "0", "--val-every", "0",
        "--no-progress"]  # fmt: skip
FAST = ["--tvl1", "nscales=1", "--tvl1", "warps=1", "--tvl1", "inner_iterations=10", "--tvl1", "outer_iterations=2"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("twostream")
    ds = make_synthetic_dataset(tmp / "ds", num_classes=2, videos_per_class=3, num_frames=12, size=(32, 40))
    flow = tmp / "flow"
    assert main(["flow", str(ds), str(flow), "--size", "32", "40", *FAST, "--no-progress"]) == 0
    rgb_run, flow_run = tmp / "runs" / "rgb", tmp / "runs" / "flow"
    data = ["--dataset", "ucf101", "--split", "1"]
    assert main(["train", *data, "--data-root", str(ds), "--out", str(rgb_run), *TINY]) == 0
    assert main(["train", "--modality", "flow", *data, "--data-root", str(flow), "--out", str(flow_run), *TINY]) == 0
    return tmp, ds, flow, rgb_run, flow_run


def test_flow_command_mirrors_the_dataset_and_resumes(chain, capsys):
    tmp, ds, flow, _, _ = chain
    files = sorted(flow.rglob("*.flow.mkv"))
    assert len(files) == 6 and (flow / "ucfTrainTestlist" / "classInd.txt").is_file()
    with FlowReader(files[0]) as r:
        assert r.num_frames == 11 and r.meta["size"] == [32, 40] and r.meta["params"]["nscales"] == 1
    capsys.readouterr()
    assert main(["flow", str(ds), str(flow), "--no-progress"]) == 0
    assert "wrote 0 flow files (0 fields), kept 6 existing" in capsys.readouterr().out
    assert main(["flow", str(ds), str(tmp / "x"), "--tvl1", "nscale=2"]) == 2
    assert "--tvl1 expects KEY=VALUE" in capsys.readouterr().err


def test_the_flow_run_is_a_two_channel_model_and_can_be_visualised(chain):
    from PIL import Image

    from p3d.models import load_model

    tmp, flow_run = chain[0], chain[4]
    model = load_model(str(flow_run))
    assert model.in_channels == 2 and model.input_spec.channel_order == "XY"
    argv = ["visualize", "--weights", str(flow_run), "--class", "MoveRight", "-o", str(tmp / "right.gif")]
    assert main([*argv, "--steps", "2", "--octaves", "1", "--scale", "1"]) == 0
    strip = np.asarray(Image.open(tmp / "right.png").convert("RGB"))
    assert strip.shape[0] == 32 and (strip[:, :32, 2] == 128).all()  # x red, y green, blue 128: a flow picture


def test_test_reports_each_stream_and_the_fusion(chain, capsys):
    tmp, ds, flow, rgb_run, flow_run = chain
    out = tmp / "test"
    data = ["--dataset", "ucf101", "--data-root", str(ds)]
    argv = ["test", str(rgb_run), *data, "--flow-weights", str(flow_run), "--flow-root", str(flow), "--clips", "2"]
    assert main([*argv, "--fusion-weights", "1", "3", "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fusion rgb:flow = 1:3 over 2 videos" in text and "fused    video hit@1" in text
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["streams"]) == {"rgb", "flow"} and m["fusion"]["weights"] == {"rgb": 1.0, "flow": 3.0}
    rgb, _ = load_scores(out / "rgb.scores.npz")
    fl, modality = load_scores(out / "flow.scores.npz")
    fused, _ = load_scores(out / "scores.npz")
    assert modality == "flow" and rgb.video_ids == fl.video_ids == fused.video_ids
    np.testing.assert_allclose(fused.scores, (rgb.scores + 3 * fl.scores) / 4, rtol=1e-6)
    assert m["video_hit@1"] == np.mean([fused.scores[i].argmax() in lab for i, lab in enumerate(fused.labels)])
    # the saved streams fuse again without their models
    out2 = tmp / "refused"
    npz = [str(out / "rgb.scores.npz"), "--flow-weights", str(out / "flow.scores.npz")]
    assert main(["test", *npz, "--out", str(out2)]) == 0
    np.testing.assert_allclose(load_scores(out2 / "scores.npz")[0].scores, (rgb.scores + fl.scores) / 2, rtol=1e-6)
    # flow computed from the RGB videos on the fly instead of stored flow
    out3 = tmp / "live"
    argv = ["test", str(rgb_run), *data, "--flow-weights", str(flow_run), "--flow-from-rgb", *FAST, "--clips", "2"]
    assert main([*argv, "--workers", "0", "--no-progress", "--out", str(out3)]) == 0
    m3 = json.loads((out3 / "metrics.json").read_text())
    assert m3["streams"]["flow"]["num_videos"] == 2 and m3["num_videos"] == 2


def test_stream_mistakes_are_one_line_errors(chain, capsys):
    tmp, ds, flow, rgb_run, flow_run = chain
    data = ["--dataset", "ucf101", "--data-root", str(ds)]
    assert main(["train", "--modality", "flow", *data, "--out", str(tmp / "runs" / "wrong"), *TINY]) == 2
    assert "an RGB video, but the model reads optical flow: compute it with `p3d flow`" in capsys.readouterr().err
    assert main(["test", str(rgb_run), *data, "--flow-weights", str(flow_run)]) == 2
    assert "give --flow-root" in capsys.readouterr().err
    assert main(["test", str(flow_run), *data, "--clips", "1", "--workers", "0", "--no-progress"]) == 2
    assert "--flow-from-rgb" in capsys.readouterr().err
    assert main(["test", str(flow_run), "--flow-weights", str(rgb_run), "--clips", "1", "--workers", "0"]) == 2
    assert "give the RGB model first" in capsys.readouterr().err


def test_predict_fuses_and_extract_computes_flow_from_rgb(chain, capsys):
    tmp, ds, flow, rgb_run, flow_run = chain
    video = next(ds.rglob("*.mp4"))
    capsys.readouterr()
    argv = ["predict", str(video), "--weights", str(rgb_run), "--flow-weights", str(flow_run), "--json"]
    assert main([*argv, "--flow-root", str(flow / video.parent.relative_to(ds)), "--clips", "2", "--workers", "0"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(row["streams"]) == {"rgb", "flow"} and len(row["top"]) == 2
    fused = dict(row["top"])
    want = {c: (dict(row["streams"]["rgb"])[c] + dict(row["streams"]["flow"])[c]) / 2 for c in fused}
    assert fused == pytest.approx(want, abs=2e-6)
    store = tmp / "feats"
    argv = ["extract", "ucf101", str(ds), "-o", str(store), "--weights", str(flow_run), "--flow-from-rgb", *FAST]
    assert main([*argv, "--num-clips", "2", "--workers", "0", "--no-progress", "--merge", str(tmp / "f.npz")]) == 0
    from p3d.representation.store import read_features

    fs = read_features(tmp / "f.npz")
    assert len(fs.ids) == 6 and fs.video["pool5"].shape[0] == 6
    argv = ["extract", "ucf101", str(ds), "-o", str(tmp / "rgbfeats"), "--weights", str(rgb_run), "--num-clips", "2"]
    assert main([*argv, "--workers", "0", "--no-progress", "--merge", str(tmp / "r.npz")]) == 0
    capsys.readouterr()
    assert main(["svm", str(tmp / "r.npz"), str(tmp / "f.npz"), "--kfold", "3", "--json", str(tmp / "svm.json")]) == 0
    out = capsys.readouterr().out
    dim = read_features(tmp / "r.npz").video["pool5"].shape[1] + fs.video["pool5"].shape[1]  # the streams' pool5
    assert "6 videos" in out and f"layer pool5+pool5 ({dim}-d)" in out
    assert json.loads((tmp / "svm.json").read_text())["dim"] == dim


def test_train_modality_flow_with_a_2d_imagenet_init_averages_conv1(tmp_path):
    """`p3d train --modality flow --imagenet-2d R.pth`: the flow network's conv1 is the mean of the RGB filters."""
    import argparse

    import torch

    from p3d.commands.train import add_arguments, flags_from_args
    from p3d.engine import load_config
    from p3d.engine.trainer import build_model
    from tests.models.reference import ResNet2D, randomize

    net = ResNet2D(layers=(1, 1, 1, 1), width=8, num_classes=5).eval()
    randomize(net, 0)
    torch.save(net.state_dict(), tmp_path / "r.pth")
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--modality", "flow", "--imagenet-2d", str(tmp_path / "r.pth"), "--model", "p3d63",
                         "--width", "8", "--layers", "1", "1", "1", "1"])  # fmt: skip
    cfg = load_config(None, [], flags_from_args(args))
    assert cfg.model.in_channels == 2
    model = build_model(cfg, ["a", "b", "c", "d", "e"])
    assert model.in_channels == 2 and model.input_spec.channel_order == "XY"
    want = net.conv1.weight.mean(1, keepdim=True).expand(-1, 2, -1, -1)
    torch.testing.assert_close(model.conv1.weight[:, :, 0], want)
