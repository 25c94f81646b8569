"""TV-L1 optical flow in PyTorch, batched over frame pairs, on any device.

The duality-based TV-L1 scheme of Zach, Pock & Bischof ("A duality based approach for realtime TV-L1 optical
flow", DAGM 2007) with the coarse-to-fine pyramid, the repeated warps and the median filtering of Sánchez,
Meinhardt-Llopis & Facciolo ("TV-L1 Optical Flow Estimation", IPOL 2013), step for step as OpenCV implements it
in ``opencv_contrib/modules/optflow/src/tvl1flow.cpp`` (``cv::optflow::DualTVL1OpticalFlow``), so that the two
engines agree to float rounding.  The OpenCV details this module reproduces:

* **Pyramid.** Level ``s`` is ``cv::resize`` of level ``s-1`` by ``scale_step`` with ``INTER_LINEAR`` and no
  pre-smoothing: output size ``round(size * scale_step)``, source coordinate ``(d + 0.5) / scale_step - 0.5``,
  replicated borders.  The pyramid stops early at the first level narrower or lower than 16 pixels.
* **Between levels** the flow is resized (``INTER_LINEAR``, scale = size ratio) to the finer level and multiplied
  by ``1 / scale_step``; the coarsest level starts from zero flow.
* **Warping** (``remap`` with ``INTER_CUBIC``, ``BORDER_CONSTANT`` 0): bicubic convolution with ``A = -0.75``,
  taps outside the image read 0 (``grid_sample``'s bicubic mode with zero padding is the same operation).  ``I1``
  and its centred gradient are warped, then ``grad = |∇I1w|²`` and ``rho_c = I1w - ∇I1w·u0 - I0``.
* **Gradients.** ``∇I1``: central differences ``(I[x+1] - I[x-1]) / 2`` with replicated borders.  ``∇u``: forward
  differences, 0 on the last column/row.  ``div p``: backward differences with ``p[-1] = 0``.
* **Iterations** per warp: outer loop (at most ``outer_iterations``) = 5×5 median filter of ``(u1, u2)``
  (replicated borders), then at most ``inner_iterations`` of: threshold step ``v = u + TH(rho)``, ``u = v + θ div
  p``, ``error = Σ |u - u_prev|²``, dual step ``p = (p + τ/θ ∇u) / (1 + τ/θ |∇u|)``.  Both loops stop as soon as
  ``error <= epsilon² · H · W`` (OpenCV's ``scaledEpsilon``); ``error`` restarts at +inf on every warp, the dual
  variables are zeroed once per level.
* **gamma** (``!= 0``) adds OpenCV's third flow channel ``u3`` (illumination term): ``rho += γ u3``, ``u3`` is
  regularised like ``u1, u2`` but neither median-filtered nor rescaled between levels and not returned.

Batching: every pair keeps its own convergence state; a pair whose error falls below the threshold stops for the
rest of the warp, exactly where OpenCV would leave its loops, so a batch returns what the pairs computed one at a
time return (up to float rounding).  Converged pairs are dropped from the working batch at host synchronisation
points (every iteration on CPU, every ``sync_every`` iterations elsewhere, masked in between).

Speed: ``compile=True`` fuses the median filter and the iteration with ``torch.compile`` (a one-off compilation
per process, cached on disk by inductor).  On CPU small batches are fastest (the state of one 320×240 pair, ~6 MB,
stays in cache; a batch of 8 does not); on a GPU, large batches.

Public API::

    TVL1Params(tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5, epsilon=0.01,
               inner_iterations=30, outer_iterations=10, scale_step=0.8, gamma=0.0, median_filtering=5)
    tvl1(frames0, frames1, params=None, *, compile=False, sync_every=None) -> (N, 2, H, W) float32
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F

__all__ = ["TVL1Params", "tvl1"]

# Minimum side of a pyramid level (tvl1flow.cpp: "if (I0s[s].cols < 16 || I0s[s].rows < 16) nscales = s").
_MIN_LEVEL_SIDE = 16
# FLT_EPSILON: the threshold step divides by |∇I1w|² only above it.
_FLT_EPSILON = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class TVL1Params:
    """Parameters of TV-L1 flow; the defaults are OpenCV's (``OpticalFlowDual_TVL1::OpticalFlowDual_TVL1``).

    ``tau``: time step of the dual update; ``lambda_``: weight of the data term (smaller = smoother flow);
    ``theta``: coupling of ``u`` and ``v``; ``nscales``: pyramid levels; ``warps``: warps per level;
    ``epsilon``: stopping threshold (per-pixel RMS change of the flow); ``inner_iterations`` /
    ``outer_iterations``: iteration caps (the median filter runs once per outer iteration); ``scale_step``: pyramid
    down-scaling factor; ``gamma``: weight of OpenCV's illumination channel (0 = off); ``median_filtering``: median
    kernel side (1 = off; OpenCV's float ``medianBlur`` supports 3 and 5).
    """

    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    gamma: float = 0.0
    median_filtering: int = 5

    def __post_init__(self) -> None:
        positive = ("tau", "lambda_", "theta", "nscales", "warps", "inner_iterations", "outer_iterations")
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"TVL1Params.{f.name}: expected a finite number, got {value!r}")
            if f.name in positive and value <= 0:
                raise ValueError(f"TVL1Params.{f.name}: must be > 0, got {value!r}")
        for name in ("nscales", "warps", "inner_iterations", "outer_iterations", "median_filtering"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"TVL1Params.{name}: expected an integer, got {getattr(self, name)!r}")
        if self.epsilon < 0:
            raise ValueError(f"TVL1Params.epsilon: must be >= 0, got {self.epsilon!r}")
        if self.gamma < 0:
            raise ValueError(f"TVL1Params.gamma: must be >= 0, got {self.gamma!r}")
        if not 0 < self.scale_step < 1:
            raise ValueError(f"TVL1Params.scale_step: must be in (0, 1), got {self.scale_step!r}")
        if self.median_filtering not in (0, 1, 3, 5):
            raise ValueError(
                f"TVL1Params.median_filtering: OpenCV supports 0 or 1 (off), 3 or 5, got {self.median_filtering!r}"
            )


# ---------------------------------------------------------------------------------------------------------------
# Image operations with OpenCV's exact sampling rules.


def _pyramid_sizes(height: int, width: int, params: TVL1Params) -> list[tuple[int, int]]:
    """``[(H, W), ...]`` of the levels, finest first, as ``cv::resize(..., fx=scale_step, fy=scale_step)`` rounds."""
    sizes = [(height, width)]
    for _ in range(1, params.nscales):
        h, w = sizes[-1]
        # cv::resize with dsize = 0: Size(saturate_cast<int>(w * fx), saturate_cast<int>(h * fy)), i.e. cvRound.
        nh, nw = round(h * params.scale_step), round(w * params.scale_step)
        if nh < _MIN_LEVEL_SIDE or nw < _MIN_LEVEL_SIDE:
            break
        sizes.append((nh, nw))
    return sizes


def _linear_taps(
    n_in: int, n_out: int, scale: float, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices ``i0, i1`` and weight ``w1`` of ``cv::resize`` ``INTER_LINEAR`` along one axis.

    ``scale`` is source pixels per destination pixel; the source position of destination ``d`` is
    ``(d + 0.5) * scale - 0.5``, clamped to the first/last pixel (OpenCV's ``resize`` border rule).
    """
    pos = (torch.arange(n_out, dtype=torch.float64) + 0.5) * scale - 0.5
    i0 = pos.floor()
    w1 = pos - i0
    i0 = i0.long()
    low, high = i0 < 0, i0 >= n_in - 1
    w1 = torch.where(low | high, torch.zeros_like(w1), w1)
    i0 = i0.clamp(0, n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0.to(device), i1.to(device), w1.to(torch.float32).to(device)  # float64 stays on the CPU


def _resize_linear(x: torch.Tensor, size: tuple[int, int], scale: tuple[float, float] | None = None) -> torch.Tensor:
    """``cv::resize(..., INTER_LINEAR)`` of ``(..., H, W)`` to ``size``; ``scale`` = source/destination per axis.

    ``scale`` defaults to the size ratio (OpenCV with an explicit ``dsize``); the pyramid passes ``1 / fx``.
    """
    h, w = x.shape[-2:]
    sy, sx = scale if scale is not None else (h / size[0], w / size[1])
    y0, y1, wy = _linear_taps(h, size[0], sy, x.device)
    x0, x1, wx = _linear_taps(w, size[1], sx, x.device)
    rows = torch.lerp(x.index_select(-1, x0), x.index_select(-1, x1), wx)
    return torch.lerp(rows.index_select(-2, y0), rows.index_select(-2, y1), wy[:, None])


def _centred_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dx, dy)`` of ``(N, H, W)``: ``(I[x+1] - I[x-1]) / 2`` with replicated borders (``centeredGradient``)."""
    p = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    dx = 0.5 * (p[:, 1:-1, 2:] - p[:, 1:-1, :-2])
    dy = 0.5 * (p[:, 2:, 1:-1] - p[:, :-2, 1:-1])
    return dx, dy


def _warp_bicubic(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``(N, C, H, W)`` images at ``(x + flow_x, y + flow_y)``: ``cv::remap`` ``INTER_CUBIC``, border 0.

    ``flow`` is ``(N, 2, H, W)``; returns ``(N, C, H, W)``.  ``grid_sample``'s bicubic mode is the same kernel as
    OpenCV's (Keys' cubic convolution, ``A = -0.75``) and with ``padding_mode="zeros"`` every one of the 4×4 taps
    outside the image reads 0, as ``BORDER_CONSTANT`` does.  The positions differ from OpenCV's by float rounding
    only: normalising to ``[-1, 1]`` and back moves them by ~1e-5 pixel, while OpenCV 4 rounds them to 1/32 pixel
    (``INTER_TAB_SIZE``) and OpenCV 5 uses them as they are.
    """
    n, c, h, w = images.shape
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)[:, None]
    gx = (xs + flow[:, 0]) * (2.0 / (w - 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / (h - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(images, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def _odd_even_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort of ``n`` wires (min to ``i``).

    Batcher, "Sorting networks and their applications", AFIPS 1968; the arbitrary-``n`` form (the comparators of
    the next power of two that touch only the first ``n`` wires).
    """
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.cache
def median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """A selection network for the median of ``n`` (odd) values: ``(i, j, write_min, write_max)`` steps.

    Batcher's sorting network pruned backwards to the comparators the middle wire depends on; a step whose max
    (min) output is never read again only computes the min (max).  Correct for all inputs by the 0-1 principle
    (checked exhaustively in the tests).  25 values: 113 comparators, 202 min/max operations.
    """
    needed = {n // 2}
    steps = []
    for i, j in reversed(_odd_even_merge_sort(n)):
        write_min, write_max = i in needed, j in needed
        if write_min or write_max:
            steps.append((i, j, write_min, write_max))
            needed |= {i, j}
    return tuple(reversed(steps))


# The selection networks _select_median unrolls (precomputed: a constant for torch.compile).
_MEDIAN_NETWORKS = {k: median_network(k * k) for k in (3, 5)}


def _select_median(padded: torch.Tensor, u: torch.Tensor, active: torch.Tensor | None, ksize: int) -> torch.Tensor:
    """Median of each ``ksize``×``ksize`` window of ``padded`` ``(N, 2, H + k - 1, W + k - 1)``, written into the
    flow channels of ``u`` ``(N, C, H, W)`` for the ``active`` pairs (all when ``None``).  Returns the new ``u``.
    """
    h, w = u.shape[-2:]
    wires = [padded[..., dy : dy + h, dx : dx + w] for dy in range(ksize) for dx in range(ksize)]
    for i, j, write_min, write_max in _MEDIAN_NETWORKS[ksize]:
        lo = torch.minimum(wires[i], wires[j]) if write_min else None
        if write_max:
            wires[j] = torch.maximum(wires[i], wires[j])
        if lo is not None:
            wires[i] = lo
    filtered = wires[ksize * ksize // 2]
    if active is not None:
        filtered = torch.where(active.view(-1, 1, 1, 1), filtered, u[:, :2])
    return torch.cat([filtered, u[:, 2:]], dim=1)


def _median_filter(
    u: torch.Tensor, active: torch.Tensor | None, ksize: int, select: Callable[..., torch.Tensor] = _select_median
) -> torch.Tensor:
    """``ksize``×``ksize`` median of the flow channels ``u[:, :2]`` ``(N, C, H, W)`` of the ``active`` pairs, with
    replicated borders as ``cv::medianBlur`` on float images (``medianBlur_SortNet``).  Returns the new ``u``.

    The padding is materialised first so that the windows are plain shifted views (vectorisable when compiled).
    """
    r = ksize // 2
    return select(F.pad(u[:, :2], (r, r, r, r), mode="replicate"), u, active, ksize)


# ---------------------------------------------------------------------------------------------------------------
# The primal-dual iteration.


def _iterate(
    u: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    a: torch.Tensor,
    rho_c: torch.Tensor,
    active: torch.Tensor | None,
    scaled_eps: torch.Tensor,
    l_t: float,
    theta: float,
    taut: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One inner iteration of ``procOneScale`` for every pair; pairs with ``active`` False are left unchanged.

    ``u, px, py``: ``(N, C, H, W)`` flow channels (``u1, u2[, u3]``) and the x and y components of their dual
    variables; ``a``: ``(N, C, H, W)`` the data term's coefficients ``(I1wx, I1wy[, gamma])``; ``rho_c``:
    ``(N, 1, H, W)`` constant part of the linearised residual; ``active``: ``(N,)`` bool or ``None`` (all);
    ``scaled_eps``: 0-d threshold of the squared change.  Returns the new ``u, px, py`` and which pairs go on
    iterating: active and ``error > scaled_eps``, ``error = Σ |u_new - u|²`` (``estimateU``).
    """
    # estimateV: the thresholding operator TH of Zach et al. (Eq. 11); |∇I1w|² excludes gamma, as in OpenCV.
    # Channel sums are written out: a reduction over the channel axis would split the compiled kernel.
    grad = a[:, 0:1] * a[:, 0:1] + a[:, 1:2] * a[:, 1:2]
    dot = a[:, 0:1] * u[:, 0:1] + a[:, 1:2] * u[:, 1:2]
    if u.shape[1] == 3:
        dot = dot + a[:, 2:3] * u[:, 2:3]
    rho = rho_c + dot
    lg = l_t * grad
    coef = torch.where(
        rho < -lg,
        l_t,
        torch.where(rho > lg, -l_t, torch.where(grad > _FLT_EPSILON, -rho / grad, 0.0)),
    )
    v = u + coef * a
    # divergence (backward differences, p[-1] = 0) and estimateU.
    div = px - F.pad(px[..., :-1], (1, 0)) + py - F.pad(py[..., :-1, :], (0, 0, 1, 0))
    u_new = v + theta * div
    going_on = (u_new - u).square().sum(dim=(1, 2, 3)) > scaled_eps
    # forwardGradient (last column / row 0) and estimateDualVariables.
    ux = F.pad(u_new[..., 1:] - u_new[..., :-1], (0, 1))
    uy = F.pad(u_new[..., 1:, :] - u_new[..., :-1, :], (0, 0, 0, 1))
    ng = 1.0 + taut * torch.sqrt(ux * ux + uy * uy)
    px_new = (px + taut * ux) / ng
    py_new = (py + taut * uy) / ng
    if active is None:
        return u_new, px_new, py_new, going_on
    keep = active.view(-1, 1, 1, 1)
    return (
        torch.where(keep, u_new, u),
        torch.where(keep, px_new, px),
        torch.where(keep, py_new, py),
        going_on & active,
    )


def _linearise(
    i1_stack: torch.Tensor, i0: torch.Tensor, u: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``(I1, I1x, I1y)`` ``(N, 3, H, W)`` by ``u`` and linearise the data term around it (``calcGradRho``).

    Returns ``a`` ``(N, C, H, W)`` = ``(I1wx, I1wy[, gamma])`` and ``rho_c = I1w - I1wx u1 - I1wy u2 - I0``
    ``(N, 1, H, W)``.
    """
    warped = _warp_bicubic(i1_stack, u[:, :2])
    i1w, i1wx, i1wy = warped[:, 0:1], warped[:, 1:2], warped[:, 2:3]
    rho_c = i1w - i1wx * u[:, 0:1] - i1wy * u[:, 1:2] - i0[:, None]
    coefficients = [i1wx, i1wy] + ([torch.full_like(i1wx, gamma)] if u.shape[1] == 3 else [])
    return torch.cat(coefficients, dim=1), rho_c


class _Kernels(NamedTuple):
    """The per-pixel stages of the inner loops: plain functions or their ``torch.compile`` versions."""

    select_median: Callable[..., torch.Tensor]
    iterate: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


_EAGER = _Kernels(_select_median, _iterate)
_compiled: _Kernels | None = None


def _kernels(compile: bool) -> _Kernels:
    """The kernels; compiled once per process, shape-generic (``dynamic=True``) so every level and batch reuses them.

    The warp (``grid_sample`` and a few cheap operations) runs 5 times per level against hundreds of iterations: it
    stays eager.
    """
    global _compiled
    if not compile:
        return _EAGER
    if _compiled is None:
        # Batch 1 vs larger batches, levels below/above inductor's 4096-element reduction threshold, gamma on/off and
        # masked/unmasked calls each make a variant of a kernel: allow more than dynamo's default 8 per function
        # (beyond the limit, fullgraph=True would fail instead of falling back).
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        _compiled = _Kernels(*(torch.compile(f, dynamic=True, fullgraph=True) for f in _EAGER))
    return _compiled


def _solve_level(
    i0: torch.Tensor,
    i1: torch.Tensor,
    u: torch.Tensor,
    params: TVL1Params,
    kernels: _Kernels,
    sync_every: int,
) -> torch.Tensor:
    """``procOneScale``: refine ``u`` ``(N, C, H, W)`` on one pyramid level of ``i0, i1`` ``(N, H, W)``; returns it.

    Per warp, the pairs still iterating form a working set; every ``sync_every`` iterations (a host
    synchronisation) the converged ones are written back into the full tensors and dropped from it.  In between,
    the kernels mask them (with ``sync_every == 1`` every pair in the working set is active: no masks at all).
    """
    n, c, h, w = u.shape
    # OpenCV's scaledEpsilon, a float; the threshold passed as a tensor so that compiled kernels serve every level.
    scaled_eps = torch.tensor(params.epsilon * params.epsilon * h * w, dtype=torch.float32, device=u.device)
    l_t = params.lambda_ * params.theta
    taut = params.tau / params.theta
    constants = (l_t, params.theta, taut)
    i1x, i1y = _centred_gradient(i1)
    i1_stack = torch.stack([i1, i1x, i1y], dim=1)
    px = torch.zeros_like(u)
    py = torch.zeros_like(u)
    for _ in range(params.warps):
        a, rho_c = _linearise(i1_stack, i0, u, params.gamma)
        idx = torch.arange(n, device=u.device)  # batch index of each pair of the working set
        ws = [u, px, py, a, rho_c]  # the working set's state
        active = torch.ones(n, dtype=torch.bool, device=u.device)
        since_sync = 0
        for _outer in range(params.outer_iterations):
            mask = active if sync_every > 1 else None
            if params.median_filtering > 1:
                ws[0] = _median_filter(ws[0], mask, params.median_filtering, kernels.select_median)
            for _inner in range(params.inner_iterations):
                mask = active if sync_every > 1 else None
                ws[0], ws[1], ws[2], active = kernels.iterate(*ws, mask, scaled_eps, *constants)
                since_sync += 1
                if since_sync >= sync_every:
                    since_sync = 0
                    idx, ws, active = _compact(idx, ws, active, (u, px, py))
                    if idx.numel() == 0:
                        break
            if idx.numel() == 0:
                break
        _compact(idx, ws, torch.zeros_like(active), (u, px, py))
    return u


def _compact(
    idx: torch.Tensor, ws: list[torch.Tensor], active: torch.Tensor, full: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Write the finished pairs of the working set back into ``full`` and drop them (a host synchronisation)."""
    if bool(active.all()):
        return idx, ws, active
    done = ~active
    for dst, src in zip(full, ws[:3], strict=True):
        if src is not dst:
            dst.index_copy_(0, idx[done], src[done])
    keep = active.nonzero().squeeze(1)
    return idx[keep], [t[keep] for t in ws], active[keep]


def _check_frames(frames0: torch.Tensor, frames1: torch.Tensor) -> None:
    for name, f in (("frames0", frames0), ("frames1", frames1)):
        if not isinstance(f, torch.Tensor):
            raise ValueError(f"tvl1: {name} must be a torch.Tensor (N, H, W), got {type(f).__name__}")
        if f.dim() != 3:
            raise ValueError(f"tvl1: {name} must be (N, H, W) grey frames, got shape {tuple(f.shape)}")
        if not (f.dtype.is_floating_point or f.dtype == torch.uint8):
            raise ValueError(f"tvl1: {name} must be float (0..255) or uint8, got {f.dtype}")
    if frames0.shape != frames1.shape:
        raise ValueError(f"tvl1: frames0 {tuple(frames0.shape)} and frames1 {tuple(frames1.shape)} differ in shape")
    if frames0.device != frames1.device:
        raise ValueError(f"tvl1: frames0 is on {frames0.device} and frames1 on {frames1.device}")
    if frames0.shape[1] < 3 or frames0.shape[2] < 3:
        raise ValueError(f"tvl1: frames must be at least 3×3 pixels, got {tuple(frames0.shape[1:])}")


def tvl1(
    frames0: torch.Tensor,
    frames1: torch.Tensor,
    params: TVL1Params | None = None,
    *,
    compile: bool = False,
    sync_every: int | None = None,
) -> torch.Tensor:
    """TV-L1 flow from ``frames0[i]`` to ``frames1[i]`` for every ``i``, as OpenCV's ``DualTVL1OpticalFlow``.

    ``frames0, frames1``: ``(N, H, W)`` grey frames on any device, float with values in 0..255 (or uint8).
    Returns ``(N, 2, H, W)`` float32 on the same device: channel 0 is the x (column) displacement, channel 1 the
    y (row) displacement in pixels, so that ``frames0[i][y, x] ≈ frames1[i][y + flow_y, x + flow_x]``.  Every pair
    is solved independently (own convergence), so batching does not change the result.

    ``compile=True`` runs the median filter and the inner iteration through ``torch.compile`` (fused kernels;
    compiling takes from tens of seconds to two minutes once per process, less with inductor's on-disk cache).
    ``sync_every``: inner iterations between the host checks that drop converged pairs from the working batch
    (default 1 on CPU, 10 on other devices, where a check stalls the queue); the result does not depend on it.
    """
    _check_frames(frames0, frames1)
    params = params or TVL1Params()
    if sync_every is None:
        sync_every = 1 if frames0.device.type == "cpu" else 10
    if isinstance(sync_every, bool) or not isinstance(sync_every, int) or sync_every < 1:
        raise ValueError(f"tvl1: sync_every must be a positive integer, got {sync_every!r}")
    n, h, w = frames0.shape
    device = frames0.device
    channels = 3 if params.gamma != 0 else 2
    if n == 0:
        return torch.zeros(0, 2, h, w, device=device)
    kernels = _kernels(compile)
    with torch.no_grad():
        levels0 = [frames0.to(torch.float32)]
        levels1 = [frames1.to(torch.float32)]
        sizes = _pyramid_sizes(h, w, params)
        inv = 1.0 / params.scale_step
        for size in sizes[1:]:
            levels0.append(_resize_linear(levels0[-1], size, (inv, inv)))
            levels1.append(_resize_linear(levels1[-1], size, (inv, inv)))
        u = torch.zeros(n, channels, *sizes[-1], device=device)
        for s in range(len(sizes) - 1, -1, -1):
            u = _solve_level(levels0[s], levels1[s], u, params, kernels, sync_every)
            if s == 0:
                break
            u = _resize_linear(u, sizes[s - 1])
            u[:, :2] *= inv
        return u[:, :2].contiguous()
