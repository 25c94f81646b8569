"""Grey conversion, flow quantisation (TSN dense_flow convention) and the flow-aware horizontal flip."""

import numpy as np
import pytest
import torch

from p3d.flow import FLOW_BOUND, dequantize_flow, flip_flow_images, quantize_flow, rgb_to_grey


def test_grey_hand_values():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [10, 200, 30]]], np.uint8)
    # (9798 R + 19235 G + 3735 B + 16384) >> 15
    expected = [(9798 * 255 + 16384) >> 15, (19235 * 255 + 16384) >> 15, (3735 * 255 + 16384) >> 15, 255, 0]
    expected.append((9798 * 10 + 19235 * 200 + 3735 * 30 + 16384) >> 15)
    assert expected[:3] == [76, 150, 29]
    np.testing.assert_array_equal(rgb_to_grey(rgb)[0], expected)
    t = rgb_to_grey(torch.from_numpy(rgb))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.shape == (1, 6)


def test_grey_matches_opencv_on_every_colour():
    cv2 = pytest.importorskip("cv2", reason="needs the flow extra: pip install 'p3d[flow]'")
    c = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(c >> 16) & 255, (c >> 8) & 255, c & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    np.testing.assert_array_equal(rgb_to_grey(rgb), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros(3, np.uint8)])
def test_grey_bad_input(bad):
    with pytest.raises(ValueError, match="rgb_to_grey"):
        rgb_to_grey(bad)


def test_quantize_known_values():
    b = FLOW_BOUND
    v = np.array([0.0, b, -b, 2 * b, -1e9, b / 255 * 0.5, -b / 255 * 0.5, 10.0, -10.0, np.nan], np.float32)
    # 255 (v + b) / 2b: 127.5 -> 128 (half to even), 255, 0, clipped, clipped, 128.0 -> 128, 127.0 -> 127,
    # 191.25 -> 191, 63.75 -> 64, NaN -> still.
    np.testing.assert_array_equal(quantize_flow(v), [128, 255, 0, 255, 0, 128, 127, 191, 64, 128])
    assert quantize_flow(v).dtype == np.uint8
    q = quantize_flow(torch.tensor([[1.0, -1.0]]), bound=5.0)
    assert isinstance(q, torch.Tensor) and q.tolist() == [[153, 102]]  # 255 * 6 / 10 = 153, 255 * 4 / 10 = 102
    # dense_flow rounds half to even like cvRound; with bound 127.5 the map is q = v + 127.5 exactly.
    np.testing.assert_array_equal(quantize_flow(np.array([-127.0, -126.0, -125.0, 0.0]), bound=127.5), [0, 2, 2, 128])


def test_dequantize_and_round_trip():
    q = np.arange(256, dtype=np.uint8)
    v = dequantize_flow(q)
    assert v.dtype == np.float32
    assert v[0] == -FLOW_BOUND and v[255] == FLOW_BOUND and v[128] == pytest.approx(FLOW_BOUND / 255, abs=1e-6)
    np.testing.assert_array_equal(quantize_flow(v), q)  # the map is an exact bijection on its grid
    flow = torch.linspace(-FLOW_BOUND, FLOW_BOUND, 10001)
    err = (dequantize_flow(quantize_flow(flow)) - flow).abs().max().item()
    assert err <= FLOW_BOUND / 255 + 1e-6 <= FLOW_BOUND / 127.5
    assert dequantize_flow(quantize_flow(np.float32([0.0]), bound=3.0), bound=3.0)[0] == pytest.approx(3.0 / 255)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), True])
def test_bad_bound(bad):
    with pytest.raises(ValueError, match="bound"):
        quantize_flow(np.zeros(3, np.float32), bound=bad)


def test_quantize_dequantize_dtype_checks():
    with pytest.raises(ValueError, match="float"):
        quantize_flow(np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        dequantize_flow(np.zeros(3, np.float32))


def test_flip_negates_x_and_mirrors():
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 5, (3, 7, 9, 2)).astype(np.float32)  # (T, H, W, C) with x in channel 0
    q = quantize_flow(flow)
    f = flip_flow_images(q)
    np.testing.assert_array_equal(f[..., 0], 255 - q[:, :, ::-1, 0])
    np.testing.assert_array_equal(f[..., 1], q[:, :, ::-1, 1])
    assert f.dtype == np.uint8 and not np.shares_memory(f, q)
    # In flow terms: the flipped images decode to the mirrored field with x negated, within one quantisation step.
    mirrored = np.stack([-flow[:, :, ::-1, 0], flow[:, :, ::-1, 1]], axis=-1)
    assert np.abs(dequantize_flow(f) - np.clip(mirrored, -20, 20)).max() <= 2 * FLOW_BOUND / 255 + 1e-5
    np.testing.assert_array_equal(flip_flow_images(f), q)  # an involution
    # A still pixel (128) becomes 127: the off-by-one of a zero at 127.5.
    still = np.full((1, 2, 2, 3), 128, np.uint8)
    assert flip_flow_images(still)[..., 0].max() == 127 and flip_flow_images(still)[..., 1:].min() == 128


def test_flip_channel_first_tensor():
    q = torch.randint(0, 256, (4, 2, 5, 6), dtype=torch.uint8)
    f = flip_flow_images(q, channel_axis=1)
    torch.testing.assert_close(f[:, 0], 255 - q[:, 0].flip(-1))
    torch.testing.assert_close(f[:, 1], q[:, 1].flip(-1))


@pytest.mark.parametrize(
    "bad, axis",
    [(np.zeros((4, 4, 2), np.float32), -1), (np.zeros((4, 4), np.uint8), -1), (np.zeros((4, 4, 1), np.uint8), -1)],
)
def test_flip_bad_input(bad, axis):
    with pytest.raises(ValueError, match="flip_flow_images"):
        flip_flow_images(bad, channel_axis=axis)
