import numpy as np
import pytest
import torch

from p3d.data import ClipTransform, normalize, resize_frames, sample_test_clips, sample_train_clip
from p3d.spec import InputSpec, caffe_bgr, caffe_flow


def test_train_clip_is_consecutive_in_range_and_seeded():
    for seed in range(50):
        idx = sample_train_clip(100, 16, 1, rng=seed)
        assert idx.shape == (16,) and idx.dtype == np.int64
        assert np.all(np.diff(idx) == 1) and 0 <= idx[0] and idx[-1] < 100
    np.testing.assert_array_equal(sample_train_clip(100, rng=7), sample_train_clip(100, rng=7))
    starts = {int(sample_train_clip(100, rng=s)[0]) for s in range(200)}
    assert len(starts) > 50  # many distinct random starts
    assert max(starts) <= 84


def test_train_clip_stride_and_generator_reproducibility():
    a = sample_train_clip(200, 8, 4, rng=np.random.default_rng(3))
    b = sample_train_clip(200, 8, 4, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert np.all(np.diff(a) == 4) and a[-1] < 200
    with pytest.raises(ValueError, match="explicit rng"):
        sample_train_clip(100, rng=None)


@pytest.mark.parametrize(
    "policy,expected",
    [("loop", [0, 1, 2, 3, 4, 0, 1, 2]), ("pad", [0, 1, 2, 3, 4, 4, 4, 4])],
)
def test_short_video_policy(policy, expected):
    assert sample_train_clip(5, 8, 1, rng=0, short_policy=policy).tolist() == expected
    clips = sample_test_clips(5, 3, 8, 1, short_policy=policy)
    assert clips.shape == (3, 8) and all(c.tolist() == expected for c in clips)
    with pytest.raises(ValueError, match="short_policy"):
        sample_train_clip(5, 8, rng=0, short_policy="wrap")


def test_test_clips_spread_uniformly():
    clips = sample_test_clips(300, 20, 16)
    assert clips.shape == (20, 16)
    assert clips[0, 0] == 0 and clips[-1, -1] == 299
    gaps = np.diff(clips[:, 0])
    assert gaps.max() - gaps.min() <= 1
    assert sample_test_clips(300, 1, 16)[0, 0] == (300 - 16) // 2


def _frames(t=4, h=182, w=242, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_train_transform_shapes_and_seeded_crop_flip():
    tf = ClipTransform(InputSpec(), train=True)
    f = _frames()
    x = tf(f, rng=1)
    assert x.shape == (3, 4, 160, 160) and x.dtype == torch.float32
    torch.testing.assert_close(tf(f, rng=1), x)
    crops = {tuple(tf(f, rng=s)[0, 0, 0, :3].tolist()) for s in range(10)}
    assert len(crops) > 5
    # some seed flips: the flipped crop equals the horizontal mirror of an unflipped crop
    flipped = [s for s in range(40) if _is_flip(tf, f, s)]
    assert 5 < len(flipped) < 35


def _is_flip(tf, f, seed):
    rng = np.random.default_rng(seed)
    top, left = int(rng.integers(0, 23)), int(rng.integers(0, 83))
    crop = f[:, top : top + 160, left : left + 160]
    out = tf.crop_flip(f, seed)
    if np.array_equal(out, crop):
        return False
    assert np.array_equal(out, crop[:, :, ::-1])
    return True


def test_test_transform_is_centre_crop_and_resizes_other_sizes():
    spec = InputSpec()
    tf = ClipTransform(spec, train=False)
    f = _frames()
    np.testing.assert_array_equal(tf.crop_flip(f), f[:, 11:171, 41:201])
    g = _frames(h=240, w=320)
    assert tf(g).shape == (3, 4, 160, 160)
    assert resize_frames(g, (182, 242)).shape == (4, 182, 242, 3)


def test_normalisation_rgb_imagenet_and_caffe_bgr():
    f = np.zeros((1, 2, 2, 3), np.uint8)
    f[..., 0] = 255  # pure red
    x = normalize(f, InputSpec())
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    y = normalize(f, caffe_bgr())
    torch.testing.assert_close(y[:, 0, 0, 0], torch.tensor([0 - 104.0, 0 - 117.0, 255 - 123.0]))
    z = normalize(f, caffe_flow())
    assert z.shape == (2, 1, 2, 2)
    torch.testing.assert_close(z[:, 0, 0, 0], torch.tensor([255 - 128.0, 0 - 128.0]))


def test_transform_rejects_bad_input():
    tf = ClipTransform(InputSpec(), train=False)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        tf(np.zeros((4, 182, 242), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tf(np.zeros((4, 182, 242, 3), np.float32))
    with pytest.raises(ValueError, match="larger"):
        ClipTransform(InputSpec(size=(200, 200), resize=(182, 242)), train=True)
