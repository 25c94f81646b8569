"""``compute_flow``: RGB frames to the flow of consecutive pairs, with either engine; the OpenCV engine's import."""

import sys
import types

import numpy as np
import pytest
import torch

from p3d.flow import TVL1Params, compute_flow, opencv_tvl1, rgb_to_grey, tvl1
from p3d.flow.opencv import import_cv2
from p3d.flow.synthetic import texture

FAST = TVL1Params(nscales=3, warps=2, outer_iterations=3)


@pytest.fixture(scope="module")
def clip():
    """(4, 40, 48, 3) uint8 RGB: a colour texture moving 1 px right and 0.5 px down per frame."""
    rng = np.random.default_rng(0)
    channels = [texture(rng) for _ in range(3)]
    ys, xs = np.mgrid[0:40, 0:48].astype(np.float64)
    frames = [np.stack([f(xs - t, ys - 0.5 * t) for f in channels], axis=-1) for t in range(4)]
    return np.round(np.stack(frames)).astype(np.uint8)


def test_consecutive_pairs_and_batching(clip):
    flow = compute_flow(clip, params=FAST, batch_size=2)
    assert flow.shape == (3, 2, 40, 48) and flow.dtype == torch.float32 and flow.device.type == "cpu"
    grey = torch.from_numpy(rgb_to_grey(clip)).float()
    for t in (0, 2):  # flow[t] is the flow from frame t to frame t + 1 (2: the last, partial batch)
        torch.testing.assert_close(flow[t : t + 1], tvl1(grey[t : t + 1], grey[t + 1 : t + 2], FAST), rtol=0, atol=1e-4)
    torch.testing.assert_close(compute_flow(clip, params=FAST, batch_size=3), flow, rtol=0, atol=1e-4)
    inner = (slice(None), slice(6, -6), slice(6, -6))
    assert abs(flow[:, 0][inner].mean().item() - 1.0) < 0.1 and abs(flow[:, 1][inner].mean().item() - 0.5) < 0.1
    # grey frames and tensors are accepted as they are
    torch.testing.assert_close(compute_flow(torch.from_numpy(rgb_to_grey(clip[:2])), params=FAST), flow[:1])


def test_opencv_engine_agrees(clip):
    pytest.importorskip("cv2", reason="OpenCV reference engine needs the flow extra: pip install 'p3d[flow]'")
    ref = compute_flow(clip, engine="opencv", params=FAST)
    grey = rgb_to_grey(clip)
    torch.testing.assert_close(ref, opencv_tvl1(grey[:-1], grey[1:], FAST), rtol=0, atol=0)
    assert (compute_flow(clip, params=FAST) - ref).norm(dim=1).mean() <= 0.25


@pytest.mark.parametrize(
    "frames, kwargs, match",
    [
        (np.zeros((3, 8, 8, 3), np.float32), {}, "uint8"),
        (np.zeros((3, 8, 8, 4), np.uint8), {}, r"\(T\+1, H, W, 3\)"),
        (np.zeros((8, 8), np.uint8), {}, r"\(T\+1, H, W, 3\)"),
        (np.zeros((1, 8, 8, 3), np.uint8), {}, "at least 2 frames"),
        ([[0]], {}, "numpy array or a torch tensor"),
        (np.zeros((3, 8, 8, 3), np.uint8), {"engine": "farneback"}, "engine"),
        (np.zeros((3, 8, 8, 3), np.uint8), {"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_inputs(frames, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_flow(frames, **kwargs)


def test_missing_opencv_names_the_extra(monkeypatch, clip):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "p3d\[flow\]"'):
        import_cv2()
    with pytest.raises(ImportError, match=r'pip install "p3d\[flow\]"'):
        compute_flow(clip, engine="opencv")
    # OpenCV without the contrib modules (opencv-python instead of opencv-contrib-python)
    monkeypatch.setitem(sys.modules, "cv2", types.ModuleType("cv2"))
    with pytest.raises(ImportError, match=r"cv2.optflow.*p3d\[flow\]"):
        import_cv2()
    # the torch engine does not need it
    assert compute_flow(clip[:2], params=FAST).shape == (1, 2, 40, 48)
