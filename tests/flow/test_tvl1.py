"""The PyTorch TV-L1 engine against OpenCV and against exactly known motion."""

import dataclasses
import importlib

import numpy as np
import pytest
import torch

from p3d.flow import TVL1Params, opencv_tvl1, tvl1
from p3d.flow.synthetic import motion_pair

engine = importlib.import_module("p3d.flow.tvl1")  # the module (the package exports the function as `tvl1`)

SIZE = (64, 80)
# (kind, magnitude): sub-pixel and multi-pixel shifts, rotations in degrees, zooms of 1 + m.
CASES = [
    ("translate", 0.4),
    ("translate", 1.7),
    ("translate", 3.3),
    ("rotate", 2.0),
    ("rotate", 4.0),
    ("zoom", 0.03),
    ("zoom", 0.06),
]


def _epe(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean end-point error per pair of ``(N, 2, H, W)`` flows, over ``valid`` pixels when given."""
    d = (a - b).norm(dim=1)
    if valid is None:
        return d.mean(dim=(1, 2))
    return (d * valid).sum(dim=(1, 2)) / valid.sum(dim=(1, 2))


@pytest.fixture(scope="module")
def pairs():
    rng = np.random.default_rng(0)
    ps = [motion_pair(kind, SIZE, m, rng) for kind, m in CASES]
    return {
        "f0": torch.tensor(np.stack([p.frame0 for p in ps])),
        "f1": torch.tensor(np.stack([p.frame1 for p in ps])),
        "gt": torch.tensor(np.stack([p.flow for p in ps])),
        "valid": torch.tensor(np.stack([p.valid for p in ps])),
    }


@pytest.fixture(scope="module")
def torch_flow(pairs):
    return tvl1(pairs["f0"].float(), pairs["f1"].float())


@pytest.fixture(scope="module")
def opencv_flow(pairs):
    pytest.importorskip("cv2", reason="OpenCV reference engine needs the flow extra: pip install 'p3d[flow]'")
    return opencv_tvl1(pairs["f0"], pairs["f1"])


def test_output_contract(pairs, torch_flow):
    n = len(CASES)
    assert torch_flow.shape == (n, 2, *SIZE) and torch_flow.dtype == torch.float32
    assert torch.isfinite(torch_flow).all()
    # uint8 input is the same as its float value.
    np.testing.assert_array_equal(tvl1(pairs["f0"][:1], pairs["f1"][:1]), torch_flow[:1])
    assert tvl1(pairs["f0"][:0].float(), pairs["f1"][:0].float()).shape == (0, 2, *SIZE)


def test_recovers_known_motion(pairs, torch_flow):
    """Independent of OpenCV: the flow of exactly warped textures is recovered to a small fraction of a pixel."""
    epe = _epe(torch_flow, pairs["gt"], pairs["valid"])
    magnitude = _epe(torch.zeros_like(pairs["gt"]), pairs["gt"], pairs["valid"])
    assert (epe < 0.2).all(), epe
    assert (epe < 0.2 * magnitude).all(), (epe, magnitude)


def test_matches_opencv(pairs, torch_flow, opencv_flow):
    epe = _epe(torch_flow, opencv_flow)
    assert (epe <= 0.25).all(), epe
    assert epe.mean() <= 0.05, epe


def test_ground_truth_error_not_worse_than_opencv(pairs, torch_flow, opencv_flow):
    ours = _epe(torch_flow, pairs["gt"], pairs["valid"])
    ref = _epe(opencv_flow, pairs["gt"], pairs["valid"])
    kinds = np.array([kind for kind, _ in CASES])
    for kind in ("translate", "rotate", "zoom"):
        sel = torch.from_numpy(kinds == kind)
        assert ours[sel].mean() <= 1.10 * ref[sel].mean(), (kind, ours[sel], ref[sel])
    assert ours.mean() <= 1.10 * ref.mean()


def test_batch_equals_pairs_one_at_a_time(pairs, torch_flow):
    f0, f1 = pairs["f0"].float(), pairs["f1"].float()
    some = [0, 3, 6]  # a translation, a rotation and a zoom
    for i in some:  # one at a time
        torch.testing.assert_close(tvl1(f0[i : i + 1], f1[i : i + 1]), torch_flow[i : i + 1], rtol=0, atol=1e-4)
    # Dropping converged pairs every 7 iterations (masking them in between, as on a GPU) changes nothing either.
    torch.testing.assert_close(tvl1(f0[some], f1[some], sync_every=7), torch_flow[some], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "params",
    [
        TVL1Params(gamma=0.2),
        TVL1Params(median_filtering=3),
        TVL1Params(median_filtering=1, epsilon=0.0, nscales=3, warps=2, outer_iterations=2),
        TVL1Params(nscales=2, scale_step=0.5, inner_iterations=10),
    ],
    ids=["gamma", "median3", "no-median-no-stop", "two-scales"],
)
def test_parameters_match_opencv(params):
    pytest.importorskip("cv2", reason="OpenCV reference engine needs the flow extra: pip install 'p3d[flow]'")
    rng = np.random.default_rng(1)
    ps = [motion_pair(kind, (48, 56), m, rng) for kind, m in [("translate", 1.3), ("rotate", 3.0)]]
    f0 = torch.tensor(np.stack([p.frame0 for p in ps]))
    # A brightness change, which the gamma channel models.
    f1 = torch.tensor(np.stack([np.clip(p.frame1 * 0.9 + 12, 0, 255).round().astype(np.uint8) for p in ps]))
    epe = _epe(tvl1(f0.float(), f1.float(), params), opencv_tvl1(f0, f1, params))
    assert (epe <= 0.25).all(), epe


def test_small_frames_use_fewer_levels_like_opencv():
    """20x24: level 1 is 16x19, level 2 would be 13x15 < 16, so OpenCV stops at 2 levels; so must we."""
    assert engine._pyramid_sizes(20, 24, TVL1Params()) == [(20, 24), (16, 19)]
    assert engine._pyramid_sizes(240, 320, TVL1Params()) == [(240, 320), (192, 256), (154, 205), (123, 164), (98, 131)]
    pytest.importorskip("cv2", reason="OpenCV reference engine needs the flow extra: pip install 'p3d[flow]'")
    p = motion_pair("translate", (20, 24), 1.5, np.random.default_rng(2))
    f0, f1 = torch.tensor(p.frame0)[None], torch.tensor(p.frame1)[None]
    assert _epe(tvl1(f0.float(), f1.float()), opencv_tvl1(f0, f1)).item() <= 0.1


# --- building blocks against OpenCV's own functions ------------------------------------------------------------


@pytest.fixture(scope="module")
def cv2():
    return pytest.importorskip("cv2", reason="needs the flow extra: pip install 'p3d[flow]'")


@pytest.mark.parametrize("size", [(64, 80), (61, 83), (240, 320)])
def test_pyramid_resize_matches_cv2(cv2, size):
    rng = np.random.default_rng(0)
    img = (rng.random(size) * 255).astype(np.float32)
    down_size = engine._pyramid_sizes(*size, TVL1Params(nscales=2))[1]
    down = engine._resize_linear(torch.from_numpy(img)[None], down_size, (1 / 0.8, 1 / 0.8))[0].numpy()
    ref = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    assert down.shape == ref.shape
    np.testing.assert_allclose(down, ref, atol=1e-3)
    # Flow upscaling: explicit destination size, scale = size ratio.
    up = engine._resize_linear(torch.from_numpy(ref)[None], size)[0].numpy()
    np.testing.assert_allclose(up, cv2.resize(ref, size[::-1], interpolation=cv2.INTER_LINEAR), atol=1e-3)


@pytest.mark.parametrize("ksize", [3, 5])
def test_median_filter_matches_cv2(cv2, ksize):
    u = torch.randn(2, 3, 23, 31)
    active = torch.tensor([True, False])
    out = engine._median_filter(u, active, ksize)
    for c in range(2):
        np.testing.assert_array_equal(out[0, c].numpy(), cv2.medianBlur(u[0, c].numpy(), ksize))
    torch.testing.assert_close(out[1], u[1], rtol=0, atol=0)  # inactive pair untouched
    torch.testing.assert_close(out[:, 2], u[:, 2], rtol=0, atol=0)  # gamma channel untouched


def test_warp_matches_cv2_remap(cv2):
    rng = np.random.default_rng(0)
    p = motion_pair("translate", (40, 56), 1.0, rng)
    img = p.frame0.astype(np.float32)
    flow = rng.normal(0, 3, (2, 40, 56)).astype(np.float32)
    flow[0, 0, :6] = [-100.0, 1e6, -2.5, 55.3, -3.7, 0.0]  # far outside, on the border, partly outside
    flow[1, -1, :4] = [1.9, 2.5, -1e5, 0.5]
    mx = np.arange(56, dtype=np.float32)[None] + flow[0]
    my = np.arange(40, dtype=np.float32)[:, None] + flow[1]
    ref = cv2.remap(img, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    out = engine._warp_bicubic(torch.from_numpy(img)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(out, ref, atol=0.02)


@pytest.mark.parametrize("n", [9, 25])
def test_median_network_is_exact_by_the_zero_one_principle(n):
    """A comparator network selects the median of every input iff it does for every 0/1 input (Knuth 5.3.4)."""
    words = 1 << (n - 6)  # 64 inputs per uint64 word, input m -> word m >> 6, bit m & 63
    word_idx = np.arange(words, dtype=np.uint64)
    low_patterns = [0xAAAAAAAAAAAAAAAA, 0xCCCCCCCCCCCCCCCC, 0xF0F0F0F0F0F0F0F0, 0xFF00FF00FF00FF00]
    low_patterns += [0xFFFF0000FFFF0000, 0xFFFFFFFF00000000]
    wires = [np.full(words, pat, dtype=np.uint64) for pat in low_patterns]
    wires += [np.where((word_idx >> np.uint64(i - 6)) & np.uint64(1), ~np.uint64(0), np.uint64(0)) for i in range(6, n)]
    for i, j, write_min, write_max in engine.median_network(n):
        lo, hi = wires[i] & wires[j], wires[i] | wires[j]
        wires[i] = lo if write_min else wires[i]
        wires[j] = hi if write_max else wires[j]
    ones = np.bitwise_count(np.arange(1 << n, dtype=np.uint32))
    expected = np.packbits(ones > n // 2, bitorder="little").view("<u8")
    np.testing.assert_array_equal(wires[n // 2], expected)
    # and on real numbers
    x = torch.randn(1, 2, 9, 11)
    k = int(round(n**0.5))
    med = engine._median_filter(x, torch.ones(1, dtype=torch.bool), k)
    windows = torch.nn.functional.pad(x, (k // 2,) * 4, mode="replicate").unfold(2, k, 1).unfold(3, k, 1)
    torch.testing.assert_close(med, windows.reshape(1, 2, 9, 11, n).median(dim=-1).values, rtol=0, atol=0)


# --- parameters and inputs ------------------------------------------------------------------------------------


def test_params_defaults_are_opencvs():
    p = TVL1Params()
    assert (p.tau, p.lambda_, p.theta, p.nscales, p.warps, p.epsilon) == (0.25, 0.15, 0.3, 5, 5, 0.01)
    assert (p.inner_iterations, p.outer_iterations, p.scale_step, p.gamma, p.median_filtering) == (30, 10, 0.8, 0.0, 5)


@pytest.mark.parametrize(
    "change",
    [
        {"tau": 0.0},
        {"lambda_": -1.0},
        {"nscales": 0},
        {"warps": 2.5},
        {"epsilon": float("nan")},
        {"scale_step": 1.0},
        {"median_filtering": 7},
        {"gamma": -0.1},
        {"inner_iterations": True},
    ],
)
def test_bad_params(change):
    name = next(iter(change))
    with pytest.raises(ValueError, match=f"TVL1Params.{name}"):
        dataclasses.replace(TVL1Params(), **change)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (torch.zeros(8, 8), torch.zeros(8, 8), r"frames0 must be \(N, H, W\)"),
        (torch.zeros(2, 8, 8), torch.zeros(2, 8, 9), "differ in shape"),
        (torch.zeros(2, 8, 8), torch.zeros(3, 8, 8), "differ in shape"),
        (torch.zeros(1, 8, 8, dtype=torch.int64), torch.zeros(1, 8, 8, dtype=torch.int64), "float"),
        (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8), "at least 3"),
        (np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), "torch.Tensor"),
        (torch.zeros(1, 8, 8), torch.zeros(1, 8, 8, device="meta"), "frames0 is on cpu and frames1 on meta"),
    ],
)
def test_bad_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):
        tvl1(a, b)


def test_bad_sync_every():
    with pytest.raises(ValueError, match="sync_every"):
        tvl1(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), sync_every=0)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "equal shape"),
        (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 9), np.uint8), "equal shape"),
        (np.zeros((1, 8, 8), np.uint8), np.zeros((1, 8, 8), np.float32), "both uint8 or both float"),
        (np.zeros((1, 8, 8), np.int32), np.zeros((1, 8, 8), np.int32), "both uint8 or both float"),
    ],
)
def test_opencv_engine_bad_inputs(a, b, match):
    with pytest.raises(ValueError, match=match):  # checked before OpenCV is imported
        opencv_tvl1(a, b)


@pytest.mark.slow
def test_compiled_kernels_match_eager():
    """``compile=True`` (torch.compile of the median and the iteration) gives the eager result to float rounding.

    Compiling takes ~15 s to ~1 min on 2 cores (less with inductor's on-disk cache): marked slow.
    """
    p = motion_pair("rotate", (32, 40), 3.0, np.random.default_rng(3))
    f0, f1 = torch.tensor(p.frame0)[None].float(), torch.tensor(p.frame1)[None].float()
    eager = tvl1(f0, f1)
    assert _epe(tvl1(f0, f1, compile=True), eager).item() <= 0.05
    # the masked kernels a GPU runs between its host checks (sync_every > 1)
    assert _epe(tvl1(f0, f1, compile=True, sync_every=5), eager).item() <= 0.05
