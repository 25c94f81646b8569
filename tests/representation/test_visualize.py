"""DeepDraw class visualisation: the class score rises, every registry model works, outputs decode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from p3d.cli import main
from p3d.models import create_model, list_models
from p3d.representation.visualize import (
    DeepDrawConfig,
    _gaussian_blur,
    deepdraw,
    input_range,
    write_animation,
    write_strip,
)
from p3d.spec import InputSpec

SPEC = InputSpec(clip_len=8, size=(48, 48), resize=(56, 56))


def tiny(name: str, seed: int = 0):
    torch.manual_seed(seed)
    if name == "c3d":
        return create_model(name, width=2, fc_width=8, num_classes=3)
    m = create_model(name, width=4, layers=(1, 1, 1, 1), num_classes=3, input_spec=SPEC)
    torch.nn.init.normal_(m.fc.weight, std=1.0)  # a classifier with a real dynamic range (init's is 0.01)
    return m


def test_class_score_rises_and_model_is_untouched():
    model = tiny("p3d63")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = deepdraw(model, 1, DeepDrawConfig(steps_per_octave=4, seed=0))
    assert len(res.scores) == 3 * 4 + 1
    assert res.scores[-1] > res.scores[0] + 1.0  # the logit of class 1 went up (here from ~1 to ~7)
    noise_only = deepdraw(model, 1, DeepDrawConfig(steps_per_octave=4, lr=1e-9, seed=0))
    assert res.scores[-1] > noise_only.scores[-1] + 1.0  # not an effect of blur/upscaling alone
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert all(p.requires_grad for p in model.parameters()) and model.training
    lo, hi = input_range(SPEC)
    assert (res.clip >= lo[0] - 1e-6).all() and (res.clip <= hi[0] + 1e-6).all()
    assert res.frames.shape == (8, 48, 48, 3) and res.frames.dtype == np.uint8


@pytest.mark.parametrize("name", list_models())
def test_every_registry_model(name, tmp_path):
    model = tiny(name)
    res = deepdraw(model, 2, DeepDrawConfig(steps_per_octave=1))
    t, (h, w) = model.input_spec.clip_len, model.input_spec.size
    assert res.frames.shape == (t, h, w, 3) and np.isfinite(res.scores).all()


def test_outputs_decode(tmp_path):
    from p3d.data import read_video

    frames = (np.random.default_rng(0).random((6, 20, 30, 3)) * 255).astype(np.uint8)
    gif = write_animation(frames, tmp_path / "a.gif", scale=2)
    with Image.open(gif) as im:
        assert im.n_frames == 6 and im.size == (60, 40)
    mp4 = write_animation(frames, tmp_path / "a.mp4")
    assert read_video(mp4).shape == (6, 20, 30, 3)
    png = write_strip(frames, tmp_path / "s.png", max_frames=4)
    with Image.open(png) as im:
        assert im.size == (4 * 30 + 3 * 2, 20)
    with pytest.raises(ValueError, match="gif or .mp4"):
        write_animation(frames, tmp_path / "a.avi")


def test_blur_preserves_constants_and_smooths():
    x = torch.zeros(1, 1, 2, 9, 9)
    x[..., 4, 4] = 1.0
    y = _gaussian_blur(x, 1.0)
    assert y.sum().item() == pytest.approx(2.0, rel=1e-5) and y.max() < 0.3
    c = torch.full((1, 3, 2, 5, 5), 0.7)
    torch.testing.assert_close(_gaussian_blur(c, 2.0), c)


def test_visualize_cli(tmp_path, capsys):
    out = tmp_path / "cls.gif"
    args = [
        "visualize", "--model", "p3d63", "--model-option", "width=4", "--model-option", "layers=[1,1,1,1]",
        "--num-classes", "3", "--class", "1", "--steps", "1", "--octaves", "2", "-o", str(out),
    ]  # fmt: skip
    assert main(args) == 0
    assert "logit" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.n_frames == 16  # the registry's default clip length
    assert (tmp_path / "cls.png").stat().st_size > 0
    assert main([*args[:-4], "--class", "7", "-o", str(out)]) == 2  # outside the 3 classes
