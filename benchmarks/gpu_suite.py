"""The GPU suite (issue 13): one command that measures p3d on whatever device it finds and writes ONE JSON plus a
Markdown table.

    python benchmarks/gpu_suite.py --out OUT_DIR                 # the device run (CUDA if present, else CPU)
    python benchmarks/gpu_suite.py --tiny --out /tmp/suite       # seconds on a CPU: what tests/test_gpu_suite.py runs

Sections (each in its own child process with its own time budget, so a crash, a hang or a CUDA error in one loses
nothing else; the results file is rewritten atomically after every measurement):

* ``equal``    the formulations compute one function, in fp32 with TF32 off: views vs conv3d (forward, and the
               gradients of a training step with trainable and frozen BN), p3d vs the plain NCDHW ``nn.Conv3d``
               port formulation, the BN-folded inference copy vs the model, and (on a GPU) the device vs the CPU.
* ``forward``  P3D-199 and P3D-63 forward in bf16 and fp16 autocast at batch 1/8/32 (channels_last_3d), both
               convolution implementations (``views``, ``conv3d``: :mod:`p3d.models.layers`), against the
               same-schedule 2D ResNet-152/-50 (``pattern="S"``: 2D bottlenecks on P3D's frame schedule) and against
               the port's NCDHW ``nn.Conv3d`` formulation (checked equal first); ms, clips/s, TFLOP/s, peak memory;
               on CUDA also the biggest batch with cuDNN's autotuner on (p3d leaves it off).
* ``train``    a training step (SGD momentum 0.9, the paper's) with AMP: bf16, and fp16 with ``GradScaler``; BN
               frozen but the first (the paper's fine-tuning protocol) and trainable; both implementations; the
               port's formulation for reference; batch chosen by the device's memory.
* ``decode``   UCF101-like files (320×240, ~7 s at 25 fps, key frame every 12 frames; H.264 and MPEG-4 Part 2 as
               in UCF101's XviD AVIs) through the extraction's decoder (20 clips, resize in the decoder's scaler,
               centre crop, uint8): frames/s and clips/s per core, and through the DataLoader with N workers.
* ``extract``  :func:`p3d.representation.extract.extract_features` end to end on those videos with P3D-199, for
               several worker counts and the automatic plan (:func:`p3d.data.loader.plan_loader`): frames/s decoded,
               clips/s through the model, the share of wall time in model batches, waiting on the loader, and so
               the GPU's idle share; against the pure forward rate.
* ``compile``  ``torch.compile`` of the BN-folded inference model (what extraction runs): compile time, eager vs
               folded vs compiled.
* ``flow``     pairs/s of the TV-L1 engine (``p3d.flow.tvl1``) if the package exists (skipped with a note if not).

Sizes follow the device: on CUDA the training batch comes from ``torch.cuda.mem_get_info`` (and halves on an
out-of-memory error); ``--tiny`` shrinks everything to seconds on a CPU.  The default budget (345 s in all) fits an
H100-class GPU well under 8 minutes and leaves a 15-minute device lease room for a rerun.

The device run (BENCHMARKS.md, "GPU"), from the repository root, with the PyAV wheel downloaded beforehand into
``benchmarks/wheels/`` (``python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
--implementation cp --platform manylinux_2_28_x86_64 -d benchmarks/wheels av==18.1.0``) and carried::

    set -o pipefail; python3 -m pip install -q --no-index --no-deps benchmarks/wheels/av-*.whl && \
    { python3 -m pip install -q --no-deps --no-build-isolation -e . || true; } && \
    export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 && nvidia-smi && \
    timeout 420 python3 benchmarks/gpu_suite.py --out $OUT --work /tmp/p3d_gpu_suite 2>&1 | tee $OUT/gpu_suite.log

(the device tool's ``run`` with ``carry=["benchmarks/wheels"]`` and ``timeout_s=480``).  ``timeout`` stopping the
suite kills the running section's process group and keeps what was measured.  A rerun of some sections only:
``--sections train,extract``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _port_formulation import check_equal, port_from  # noqa: E402
from p3d.fileio import atomic_write_json, atomic_write_text  # noqa: E402
from p3d.models import count_flops, create_model  # noqa: E402
from p3d.models.layers import DEFAULT_CONV_IMPL, use_conv_impl  # noqa: E402
from p3d.spec import InputSpec  # noqa: E402

# in order of importance: the long compile runs late, so that if it overruns the extraction numbers already exist
SECTIONS = ("equal", "forward", "train", "decode", "extract", "compile", "flow")
# seconds per section on a GPU (child start and CUDA initialisation included); 345 s in all
BUDGETS = {"equal": 25, "forward": 70, "train": 55, "compile": 70, "decode": 30, "extract": 75, "flow": 20}
TINY_BUDGET = 120  # per section on a CPU at --tiny sizes (they take a few seconds)
IMPLS = ("views", "conv3d")
DTYPES = ("bf16", "fp16")
# Saved activations of one training clip (16×160×160, bf16 autocast), summed over autograd's saved tensors on the CPU
# build (torch.autograd.graph.saved_tensors_hooks): P3D-199 257 MiB with BN frozen, 347 MiB trainable; P3D-63 148 /
# 205 MiB.  Doubled for workspace, gradients and allocator slack when sizing the training batch.
TRAIN_MIB_PER_CLIP = {"p3d199": 2 * 347, "p3d63": 2 * 205}
MiB = 2**20


# sizes ---------------------------------------------------------------------------------------------------------
@dataclass
class Sizes:
    """Everything the sections' sizes depend on; ``for_device`` picks them from the device and its memory."""

    tiny: bool
    models: tuple[str, ...] = ("p3d199", "p3d63")
    width: int = 64
    layers: tuple[int, ...] | None = None  # None: the registry's depth (tiny: one unit per stage)
    clip_len: int = 16
    crop: int = 160
    resize: tuple[int, int] = (182, 242)
    batches: tuple[int, ...] = (32, 8, 1)
    train_batch: dict[str, int] = field(default_factory=lambda: {"p3d199": 32, "p3d63": 32})
    warmup: int = 3
    reps: int = 10
    check_size: int = 112  # spatial size of the equality checks
    video_hw: tuple[int, int] = (240, 320)
    video_frames: int = 175  # UCF101: ~7.2 s at 25 fps on average
    gop: int = 12
    bitrate: int = 500_000  # UCF101's 6.5 GB over 13,320 clips of ~7.2 s is ~0.55 Mbit/s
    unique_videos: int = 16
    num_clips: int = 20
    extract_batch: int = 32
    extract_seconds: float = 6.0  # target duration of one extraction run
    extract_max_videos: int = 480
    decode_videos: int = 12
    flow_hw: tuple[int, int] = (240, 320)
    flow_batch: int = 32

    @property
    def spec(self) -> InputSpec:
        return InputSpec(clip_len=self.clip_len, size=(self.crop, self.crop), resize=self.resize)

    @classmethod
    def for_device(cls, device: torch.device, tiny: bool, free_bytes: int | None = None) -> Sizes:
        if tiny:
            return cls(
                tiny=True,
                width=4,
                layers=(1, 1, 1, 1),
                clip_len=16,  # the port formulation is written for 16 frames
                crop=32,
                resize=(36, 48),
                batches=(2,),
                train_batch={"p3d199": 2, "p3d63": 2},
                warmup=1,
                reps=1,
                check_size=64,  # res5 at 2×2: BN batch statistics over 1×1 maps are ill-conditioned
                video_hw=(48, 64),
                video_frames=24,
                bitrate=100_000,
                unique_videos=2,
                num_clips=2,
                extract_batch=4,
                extract_seconds=1.0,
                extract_max_videos=6,
                decode_videos=2,
                flow_hw=(32, 48),
                flow_batch=2,
            )
        s = cls(tiny=False)
        if device.type == "cuda":
            if free_bytes is None:
                free_bytes = torch.cuda.mem_get_info(device)[0]
            s.train_batch = {m: train_batch_for(free_bytes, TRAIN_MIB_PER_CLIP[m]) for m in s.models}
            s.flow_batch = 64 if free_bytes > 40 * 2**30 else 16
        else:  # a full-size run on a CPU: the same clips, fewer and smaller batches (the budgets still bound it)
            s.batches, s.train_batch, s.warmup, s.reps = (8, 1), {"p3d199": 2, "p3d63": 2}, 1, 3
            s.extract_batch, s.flow_batch = 8, 2
        return s


def train_batch_for(free_bytes: int, mib_per_clip: float, cap: int = 32, share: float = 0.5) -> int:
    """The largest power of two ≤ ``cap`` whose estimated training memory fits ``share`` of the free memory."""
    fit = int(share * free_bytes / (mib_per_clip * MiB))
    if fit < 1:
        return 1
    return min(cap, 2 ** int(math.log2(fit)))


# measuring -----------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """CUDA: ``max_memory_allocated`` since the last :func:`reset_peak`; CPU: the process's peak RSS so far
    (``getrusage``: monotone over the process, so only the first configuration's value is its own)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int, deadline: float) -> list[float]:
    """Seconds of each of up to ``reps`` calls of ``fn`` (synchronised) after ``warmup`` calls; stops early (after at
    least one timed call) once ``deadline`` (a ``perf_counter`` time) has passed."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline:
            break
    return times


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b| in float64 on the CPU."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def grad_err(grads: dict[str, dict[str, torch.Tensor]]) -> tuple[float, str]:
    """The worst parameter's error between the conv3d and the views gradients, ``max |a − b|`` over that
    parameter's ``max |b|`` (floored at 1e-3 of the largest gradient, so a sum that cancels to almost nothing, e.g. a
    BN bias, does not count), and its name: a broken kernel on one small tensor must not hide behind the largest
    gradient.  NaN if any gradient is NaN."""
    a, b = grads["conv3d"], grads["views"]
    if a.keys() != b.keys():
        return float("inf"), "parameter sets differ"
    scale = max(float(v.detach().abs().max()) for v in b.values())
    worst, where = 0.0, ""
    for n in b:
        d = float((a[n].detach().double() - b[n].detach().double()).abs().max())
        e = d / max(float(b[n].detach().abs().max()), 1e-3 * scale, 1e-30)
        if math.isnan(e) or e > worst:
            worst, where = e, n
            if math.isnan(e):
                break
    return worst, where


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off (cuDNN and cuBLAS) for the equality checks: fp32 must mean fp32."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def autocast(device: torch.device, dtype: str | None):
    if dtype in (None, "fp32"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)


def is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


def clips(batch: int, sizes: Sizes, device: torch.device, channels_last: bool = True, seed: int = 0) -> torch.Tensor:
    """A random clip batch ``(N, 3, T, S, S)`` on ``device`` (channels_last_3d unless asked otherwise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, sizes.clip_len, sizes.crop, sizes.crop, generator=g).to(device)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x.contiguous()


def build(name: str, sizes: Sizes, device: torch.device | None = None, **options: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    if sizes.layers is not None:
        options = {"layers": sizes.layers, **options}
    m = create_model(name, width=sizes.width, input_spec=sizes.spec, **options)
    if device is not None:
        m = m.to(device).to(memory_format=torch.channels_last_3d)
    return m


# section plumbing ----------------------------------------------------------------------------------------------
class Section:
    """One section's results: rows, notes and a summary, saved (atomically) to ``partial`` after every change so
    that a killed child leaves what it measured."""

    def __init__(self, name: str, budget: float, args: argparse.Namespace, partial: Path | None = None) -> None:
        self.name, self.args, self.partial = name, args, partial
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget - max(2.0, 0.08 * budget)  # soft: leave room to save and exit
        self.device = pick_device(args.device)
        self.sizes = Sizes.for_device(self.device, args.tiny)
        self.data: dict[str, Any] = {"rows": [], "notes": [], "summary": {}, "status": "running"}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, save: bool = True, **row: Any) -> dict[str, Any]:
        row = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        self.data["rows"].append(row)
        if save:
            self.save()
        print(f"  [{self.name}] " + "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        return row

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()
        print(f"  [{self.name}] note: {text}", flush=True)

    def skipped(self, what: dict[str, Any], why: str = "time budget spent") -> None:
        self.row(save=False, **what, status=f"skipped: {why}")  # saved with the next row or at the end

    def save(self) -> None:
        if self.partial is not None:
            atomic_write_json(self.partial, self.data)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run_guarded(sec: Section, fn: Callable[[Section], None]) -> None:
    inject = dict(x.split(":", 1) for x in sec.args.inject)
    threads = torch.get_num_threads()
    if sec.sizes.tiny:
        torch.set_num_threads(1)  # tiny ops on a shared CPU: OpenMP threads only wait for each other
    try:
        if inject.get(sec.name) == "fail":
            raise RuntimeError("injected failure (test)")
        if inject.get(sec.name) == "hang":
            sec.row(what="before the injected hang")
            time.sleep(3600)
        if sec.device.type == "cuda":
            torch.backends.cudnn.benchmark = sec.args.cudnn_benchmark  # p3d itself leaves it off
        fn(sec)
        sec.data["status"] = "ok"
    except Exception as e:  # noqa: BLE001 - a failing section is recorded, never fatal to the suite
        sec.data["status"] = "failed"
        sec.data["error"] = f"{type(e).__name__}: {e}"
        sec.data["traceback"] = traceback.format_exc()[-4000:]
        print(f"  [{sec.name}] FAILED: {sec.data['error']}", flush=True)
    finally:
        torch.set_num_threads(threads)
    sec.save()


# section: equal ------------------------------------------------------------------------------------------------
def section_equal(sec: Section) -> None:
    dev, s = sec.device, sec.sizes
    tol = 1e-4  # fp32 through different kernels (CPU test: 1e-5); bf16 is not checked here
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, s.clip_len, s.check_size, s.check_size, generator=g)

    def check(name: str, err: float | tuple[float, str], limit: float = tol) -> None:
        err, where = err if isinstance(err, tuple) else (err, None)
        ok = math.isfinite(err) and err < limit
        sec.row(check=name, error=float(f"{err:.3e}"), tol=limit, ok=ok, **({"worst": where} if where else {}))

    with exact_fp32():
        model = build("p3d63", s).eval()
        with torch.no_grad():
            ref_cpu = model(x) if dev.type != "cpu" else None
        model = model.to(dev).to(memory_format=torch.channels_last_3d)
        xd = x.to(dev)
        with torch.no_grad():
            out = {}
            for impl in IMPLS:
                with use_conv_impl(impl):
                    out[impl] = model.forward_layers(xd, ["pool5", "logits"])
        check("forward views vs conv3d (pool5)", rel_err(out["conv3d"]["pool5"], out["views"]["pool5"]))
        check("forward views vs conv3d (logits)", rel_err(out["conv3d"]["logits"], out["views"]["logits"]))
        if dev.type != "cpu":
            check(f"{dev.type} vs CPU (logits, views)", rel_err(out["views"]["logits"], ref_cpu))
        for frozen in (False, True):
            grads = {}
            for impl in IMPLS:
                m = copy.deepcopy(model).train()
                m.drop.p = 0.0  # the same function: no random dropout mask
                if frozen:
                    m.freeze_bn(keep_first=True)
                with use_conv_impl(impl):
                    F.cross_entropy(m(xd), torch.tensor([1, 2], device=dev)).backward()
                grads[impl] = {n: p.grad for n, p in m.named_parameters() if p.grad is not None and p.dim() == 5}
            bn = "BN frozen but bn1" if frozen else "BN trainable"
            # 2 clips' batch statistics amplify fp32 reordering in trainable BN: 1e-3 per kernel
            check(
                f"conv weight gradients views vs conv3d ({bn}, worst conv)",
                grad_err(grads),
                tol if frozen else 1e-3,
            )
        # bf16 autocast: both are bf16 kernels with fp32 accumulation, so they agree to bf16 rounding (a few 1e-3
        # of the largest gradient); a broken kernel gives NaN or orders of magnitude (torch 2.13's CPU bf16 conv3d
        # weight gradient of a 3×1×1 kernel on a 2-frame input returns uninitialised memory: BENCHMARKS.md, "GPU")
        grads = {}
        for impl in IMPLS:
            m = copy.deepcopy(model).train()
            m.drop.p = 0.0
            m.freeze_bn(keep_first=True)  # batch statistics of 2 clips would amplify bf16 rounding
            with use_conv_impl(impl), autocast(dev, "bf16"):
                loss = F.cross_entropy(m(xd).float(), torch.tensor([1, 2], device=dev))
            loss.backward()
            grads[impl] = {n: p.grad for n, p in m.named_parameters() if p.grad is not None and p.dim() == 5}
        check("conv weight gradients views vs conv3d (bf16 autocast, BN frozen, worst conv)", grad_err(grads), 5e-2)
        from p3d.engine.inference import for_inference

        with torch.no_grad():
            fused = for_inference(model, dev)
            check("BN-folded inference copy vs model (logits)", rel_err(fused(xd), out["views"]["logits"]))
        model_cpu = build("p3d63", s).eval()
        port = port_from(model_cpu).to(dev)
        try:
            err = check_equal(model_cpu.to(dev), port, xd[:1])
            check("p3d vs port NCDHW nn.Conv3d formulation (pool5)", err)
        except AssertionError as e:
            sec.row(check="p3d vs port NCDHW nn.Conv3d formulation", error=str(e), tol=tol, ok=False)
    sec.data["summary"]["all_equal"] = all(r.get("ok") for r in sec.data["rows"])


# section: forward ----------------------------------------------------------------------------------------------
def section_forward(sec: Section) -> None:
    dev, s = sec.device, sec.sizes
    nets: dict[str, dict[str, Any]] = {}
    for name in s.models:
        p3d = build(name, s).eval()
        port = port_from(p3d).eval().to(dev)  # NCDHW contiguous: the port's layout
        p3d = p3d.to(dev).to(memory_format=torch.channels_last_3d)
        two_d = build(name, s, dev, pattern="S").eval()
        x1 = clips(1, s, dev)
        with exact_fp32():
            try:
                err = check_equal(p3d, port, x1)
                sec.note(f"{name}: port formulation checked equal (pool5 max rel. error {err:.1e})")
            except AssertionError as e:
                sec.note(f"{name}: port formulation NOT equal, not timed: {e}")
                port = None
        flops = {"p3d": count_flops(p3d, x1), "2d": count_flops(two_d, x1)}
        flops["port"] = flops["p3d"]
        sec.data["summary"].setdefault("gflops_per_clip", {})[name] = {k: v / 1e9 for k, v in flops.items()}
        nets[name] = {"p3d": p3d, "2d": two_d, "port": port, "flops": flops}
    variants = [("p3d", "views"), ("p3d", "conv3d"), ("2d", "views"), ("2d", "conv3d"), ("port", "-")]
    for batch in s.batches:
        for name in s.models:
            for dtype in DTYPES:
                x = clips(batch, s, dev)
                for net, impl in variants:
                    time_forward(sec, nets[name], {"model": name, "net": net, "impl": impl, "dtype": dtype}, x)
    if dev.type == "cuda" and not sec.args.cudnn_benchmark:
        # p3d leaves cuDNN's autotuner off; would turning it on pay?  (the biggest batch, bf16, both implementations)
        torch.backends.cudnn.benchmark = True
        x = clips(s.batches[0], s, dev)
        for name in s.models:
            for impl in IMPLS:
                what = {"model": name, "net": "p3d", "impl": impl, "dtype": "bf16", "cudnn_benchmark": True}
                time_forward(sec, nets[name], what, x)
        torch.backends.cudnn.benchmark = False
    sec.data["summary"]["comparisons"] = forward_comparisons(sec.data["rows"], sec.data["summary"])


def time_forward(sec: Section, nets: dict[str, Any], what: dict[str, Any], x: torch.Tensor) -> None:
    """Time one forward configuration of :func:`section_forward` (inference mode, autocast) and record its row."""
    dev, s = sec.device, sec.sizes
    model, batch = nets[what["net"]], len(x)
    what = {**what, "batch": batch}
    if model is None:
        return
    if sec.left() < (1.0 if s.tiny else 3.0):
        sec.skipped(what)
        return
    inp = x.contiguous() if what["net"] == "port" else x
    impl = None if what["impl"] == "-" else what["impl"]

    def fwd():
        with torch.inference_mode(), autocast(dev, what["dtype"]), use_conv_impl(impl):
            return model(inp)

    try:
        reset_peak(dev)
        t = statistics.median(timed(fwd, dev, s.warmup, s.reps, sec.deadline))
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: record, go on
        sec.row(**what, status=("oom" if is_oom(e) else f"error: {type(e).__name__}: {e}"))
        return
    fl = nets["flops"][what["net"]] * batch
    sec.row(**what, ms=1e3 * t, clips_s=batch / t, tflops=fl / t / 1e12, peak_mib=peak_mib(dev))


def forward_comparisons(rows: list[dict], summary: dict) -> list[dict]:
    """Per (model, dtype, batch): conv3d vs views, p3d vs the 2D net (÷ their FLOP ratio), the port vs p3d."""
    ms = {
        (r["model"], r["net"], r["impl"], r["dtype"], r["batch"]): r["ms"]
        for r in rows
        if "ms" in r and not r.get("cudnn_benchmark")
    }
    out = []
    for model, dtype, batch in sorted({(k[0], k[3], k[4]) for k in ms}, key=lambda k: (k[0], k[1], -k[2])):

        def get(net: str, impl: str, key=(model, dtype, batch)) -> float | None:
            return ms.get((key[0], net, impl, key[1], key[2]))

        views, conv3d = get("p3d", "views"), get("p3d", "conv3d")
        best = min((v for v in (views, conv3d) if v), default=None)
        best_2d = min((v for v in (get("2d", "views"), get("2d", "conv3d")) if v), default=None)
        fl = summary.get("gflops_per_clip", {}).get(model, {})
        c = {"model": model, "dtype": dtype, "batch": batch}
        if views and conv3d:
            c["conv3d_speedup_over_views"] = round(views / conv3d, 3)
        if best and best_2d and fl:
            c["p3d_vs_2d_time_per_flop"] = round(best / best_2d / (fl["p3d"] / fl["2d"]), 3)
        if best and get("port", "-"):
            c["speedup_over_port"] = round(get("port", "-") / best, 3)
        out.append(c)
    return out


def conv_impl_decision(forward_rows: list[dict], train_rows: list[dict]) -> dict[str, Any]:
    """Which implementation to make the measured device type's default (:data:`p3d.models.layers.DEFAULT_CONV_IMPL`):
    the one with the lower geometric-mean time over every (model, dtype, batch) forward and (model, bn, amp)
    training configuration measured with both."""
    logs: list[float] = []
    for rows, key in ((forward_rows, ("model", "dtype", "batch")), (train_rows, ("model", "bn", "amp"))):
        by: dict[tuple, dict[str, float]] = {}
        for r in rows:
            if r.get("net") == "p3d" and "ms" in r and not r.get("cudnn_benchmark"):
                by.setdefault(tuple(r[k] for k in key), {})[r["impl"]] = r["ms"]
        logs += [math.log(v["conv3d"] / v["views"]) for v in by.values() if "views" in v and "conv3d" in v]
    if not logs:
        return {"conv_impl": None, "why": "no configuration was measured with both implementations"}
    ratio = math.exp(sum(logs) / len(logs))
    pick = "conv3d" if ratio < 1 else "views"
    return {
        "conv_impl": pick,
        "conv3d_time_over_views_geomean": round(ratio, 3),
        "configurations": len(logs),
        "why": f"conv3d takes {ratio:.2f}× the time of views (geometric mean over {len(logs)} configurations)",
    }


# section: train ------------------------------------------------------------------------------------------------
def calibrate_bn(model: torch.nn.Module, sizes: Sizes, device: torch.device, batch: int, passes: int = 4) -> None:
    """Give a randomly initialised net BatchNorm statistics of its own activations (cumulative average over
    ``passes`` training-mode forwards of random batches), as a pretrained net has: with identity statistics frozen,
    a random 50-unit trunk's activations grow without bound (fp16 would overflow and every step be skipped)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad(), autocast(device, "bf16"):
        for k in range(passes):
            model(clips(batch, sizes, device, seed=100 + k))
    for m in bns:
        m.momentum = 0.1


def freeze_port_bn(port: torch.nn.Module) -> None:
    for name, m in port.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and name != "bn1":
            m.eval()
            m.requires_grad_(False)


def section_train(sec: Section) -> None:
    dev, s = sec.device, sec.sizes
    tasks = []
    for name in s.models:
        for bn, amp in (("frozen", "bf16"), ("frozen", "fp16"), ("trainable", "bf16"), ("trainable", "fp16")):
            tasks += [(name, "p3d", bn, amp, impl) for impl in IMPLS]
        tasks += [(name, "port", "frozen", "bf16", "-"), (name, "port", "trainable", "bf16", "-")]
    # the paper's protocol on the big model first, the rest as time allows
    order = {("p3d199", "frozen"): 0, ("p3d199", "trainable"): 1, ("p3d63", "frozen"): 2, ("p3d63", "trainable"): 3}
    tasks.sort(key=lambda t: (order.get((t[0], t[2]), 4), t[1] == "port", t[3] == "fp16"))
    bases: dict[str, torch.nn.Module] = {}
    batch = dict(s.train_batch)
    for name, net, bn, amp, impl in tasks:
        what = {"model": name, "net": net, "bn": bn, "amp": amp, "impl": impl}
        if sec.left() < (1.0 if s.tiny else 5.0):
            sec.skipped({**what, "batch": batch[name]})
            continue
        if name not in bases:
            bases.clear()  # one model family resident at a time
            base = build(name, s, dev, num_classes=101)
            calibrate_bn(base, s, dev, batch=max(4, min(batch[name], 8)))
            bases[name] = base
        for _attempt in range(4):
            b = batch[name]
            try:
                r = train_step_timing(sec, bases[name], net, bn, amp, impl, b)
                sec.row(**what, batch=b, **r)
                break
            except Exception as e:  # noqa: BLE001
                if is_oom(e) and b > 1:
                    batch[name] = b // 2
                    sec.note(f"{name} {net} {bn} {amp}: out of memory at batch {b}, retrying at {b // 2}")
                    reset_peak(dev)
                    continue
                sec.row(**what, batch=b, status=("oom" if is_oom(e) else f"error: {type(e).__name__}: {e}"))
                break


def train_step_timing(
    sec: Section, base: torch.nn.Module, net: str, bn: str, amp: str, impl: str, batch: int
) -> dict[str, Any]:
    dev, s = sec.device, sec.sizes
    if net == "port":
        model = port_from(base).to(dev).train()
        if bn == "frozen":
            freeze_port_bn(model)
        x = clips(batch, s, dev, channels_last=False, seed=3)
    else:
        model = copy.deepcopy(base).train()
        if bn == "frozen":
            model.freeze_bn(keep_first=True)
        x = clips(batch, s, dev, seed=3)
    y = torch.arange(batch, device=dev) % 101
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type) if amp == "fp16" else None
    losses: list[torch.Tensor] = []

    def step() -> None:
        with use_conv_impl(None if impl == "-" else impl):
            with autocast(dev, amp):
                loss = F.cross_entropy(model(x).float(), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    reset_peak(dev)
    t = statistics.median(timed(step, dev, max(1, s.warmup - 1), s.reps, sec.deadline))
    out = {"ms": 1e3 * t, "clips_s": batch / t, "peak_mib": peak_mib(dev)}
    out["loss_finite"] = bool(torch.isfinite(torch.stack(losses)).all())
    if scaler is not None:
        out["grad_scale"] = float(scaler.get_scale())
    return out


# section: compile ----------------------------------------------------------------------------------------------
def section_compile(sec: Section) -> None:
    from p3d.engine.inference import for_inference

    dev, s = sec.device, sec.sizes
    batch, dtype = s.batches[0], "bf16"
    first_compile: float | None = None
    tasks = [("p3d63", "views"), ("p3d199", "views"), ("p3d63", "conv3d"), ("p3d199", "conv3d")]
    if s.tiny:  # tracing dominates at tiny sizes: one model, both implementations
        tasks = [t for t in tasks if t[0] == "p3d63"]
    for name, impl in tasks:
        what = {"model": name, "impl": impl, "dtype": dtype, "batch": batch, "backend": sec.args.compile_backend}
        # P3D-199 has ~3× P3D-63's units: expect ~3× its compile time
        need = 10.0 if first_compile is None else first_compile * (3.0 if name == "p3d199" else 1.2) + 5.0
        if sec.left() < (1.0 if s.tiny else need):
            sec.skipped(what, f"time budget ({sec.left():.0f} s left, ~{need:.0f} s needed)")
            continue
        torch._dynamo.reset()
        model = build(name, s, dev).eval()
        fused = for_inference(model, dev)
        x = clips(batch, s, dev)

        def run(m, impl=impl, x=x):
            def f():
                with torch.no_grad(), autocast(dev, dtype), use_conv_impl(impl):
                    return m(x)

            return f

        try:
            compiled = torch.compile(fused, backend=sec.args.compile_backend)
            t0 = time.perf_counter()
            out_c = run(compiled)()
            sync(dev)
            compile_s = time.perf_counter() - t0
            first_compile = first_compile or compile_s
            err = rel_err(out_c.float(), run(fused)().float())
            t = {
                k: statistics.median(timed(run(m), dev, s.warmup, s.reps, sec.deadline))
                for k, m in (("eager", model), ("fused", fused), ("compiled", compiled))
            }
        except Exception as e:  # noqa: BLE001
            sec.row(**what, status=f"error: {type(e).__name__}: {str(e)[:300]}")
            continue
        sec.row(
            **what,
            eager_ms=1e3 * t["eager"],
            fused_ms=1e3 * t["fused"],
            compiled_ms=1e3 * t["compiled"],
            compile_s=compile_s,
            speedup_over_fused=t["fused"] / t["compiled"],
            max_rel_err=float(f"{err:.2e}"),
        )
        del model, fused, compiled


# videos --------------------------------------------------------------------------------------------------------
CODECS = {"h264": ("libx264", ".mp4"), "mpeg4": ("mpeg4", ".avi")}


def write_ucf_like(path: Path, codec: str, hw: tuple[int, int], frames: int, gop: int, bitrate: int, seed: int) -> None:
    """A UCF101-like file: a textured scene panning under a moving textured disc, fine grain on top (so the
    decoder has real residuals to work through), 25 fps, a key frame every ``gop`` frames, ``bitrate`` bit/s."""
    import av

    from p3d.data.synthetic import _texture

    rng = np.random.default_rng(seed)
    h, w = hw
    scene = (
        _texture(rng, h + frames // 2 + 1, w + 2 * frames) * 200
        + rng.random((h + frames // 2 + 1, w + 2 * frames, 1)) * 55
    )
    scene = scene.astype(np.uint8)
    disc = (_texture(rng, h, w) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    name, _ = CODECS[codec]
    with av.open(str(path), "w") as c:
        st = c.add_stream(name, rate=25)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        st.bit_rate = bitrate
        st.codec_context.gop_size = gop
        st.codec_context.thread_count = 1
        if codec == "h264":
            st.codec_context.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop)}
        for t in range(frames):
            img = scene[t // 2 : t // 2 + h, 2 * t : 2 * t + w].copy()
            cy, cx = h / 2 + h / 4 * math.sin(t / 15), w / 2 + w / 3 * math.cos(t / 20)
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < (min(h, w) / 5) ** 2
            img[m] = disc[m]
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            vf.pts = t
            for p in st.encode(vf):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def _write_one(job: tuple) -> None:
    write_ucf_like(*job)


def ensure_videos(sizes: Sizes, work: Path, codec: str) -> list[Path]:
    """``sizes.unique_videos`` UCF101-like files of ``codec`` under ``work`` (written once, in parallel)."""
    folder = work / f"videos-{codec}-{sizes.video_hw[1]}x{sizes.video_hw[0]}-{sizes.video_frames}"
    ext = CODECS[codec][1]
    paths = [folder / f"v{k:03d}{ext}" for k in range(sizes.unique_videos)]
    todo = [p for p in paths if not p.exists()]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = [p.with_name("tmp-" + p.name) for p in todo]
        jobs = [(t, codec, sizes.video_hw, sizes.video_frames, sizes.gop, sizes.bitrate, k) for k, t in enumerate(tmp)]
        procs = min(len(jobs), max(1, (os.cpu_count() or 1) - 1))
        if procs > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(procs) as pool:
                pool.map(_write_one, jobs)
        else:
            for j in jobs:
                _write_one(j)
        for t, p in zip(tmp, todo, strict=True):
            os.replace(t, p)
    return paths


def video_list(paths: list[Path], n: int, work: Path) -> list:
    """``n`` samples cycling over ``paths`` through symbolic links, so every sample has its own id."""
    from p3d.data.datasets import Sample

    folder = work / f"links-{paths[0].parent.name}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        src = paths[i % len(paths)]
        link = folder / f"s{i:05d}{src.suffix}"
        if not link.exists():
            link.symlink_to(src)
        out.append(Sample(str(link), (0,), link.stem))
    return out


def mbit_s(paths: list[Path], frames: int, fps: int = 25) -> float:
    return statistics.mean(p.stat().st_size for p in paths) * 8 / (frames / fps) / 1e6


def decode_only(path: Path) -> int:
    """Frames of ``path`` through the codec alone (no colour conversion, no resize), one thread."""
    import av

    with av.open(str(path)) as c:
        st = c.streams.video[0]
        st.thread_count = 1
        return sum(1 for _ in c.decode(st))


# section: decode -----------------------------------------------------------------------------------------------
def section_decode(sec: Section) -> None:
    from p3d.data import VideoClipsDataset, build_loader

    s, work = sec.sizes, Path(sec.args.work)
    for codec in CODECS:
        t0 = time.perf_counter()
        paths = ensure_videos(s, work, codec)
        rate = mbit_s(paths, s.video_frames)
        sec.note(f"{codec}: {len(paths)} files, {rate:.2f} Mbit/s (written in {time.perf_counter() - t0:.1f} s)")
        samples = video_list(paths, max(s.decode_videos, len(paths)), work)
        ds = VideoClipsDataset(samples, s.spec, num_clips=s.num_clips, raw=True)
        ds[0]  # warm the page cache and the code paths
        torch.set_num_threads(1)
        n, w0, c0 = 0, time.perf_counter(), time.process_time()
        for i in range(len(ds)):
            item = ds[i]
            assert item["valid"], item["error"]
            n += 1
            if time.perf_counter() - w0 > max(2.0, sec.left() / 6):
                break
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        frames = n * s.video_frames  # 20 clips of 16 spread over the video: every frame is decoded
        sec.row(
            codec=codec,
            how="extraction items (open, index, decode, resize to RGB, crop), 1 thread",
            videos=n,
            frames_s_per_core=frames / cpu,
            clips_s_per_core=n * s.num_clips / cpu,
            frames_s_wall=frames / wall,
        )
        c0, got = time.process_time(), 0
        for p in paths[: max(1, n)]:
            got += decode_only(p)
        sec.row(codec=codec, how="codec alone (PyAV decode to YUV, no conversion), 1 thread", videos=max(1, n),
                frames_s_per_core=got / (time.process_time() - c0))  # fmt: skip
    # the supply side of extraction: the DataLoader alone, N workers, pinned memory on CUDA
    paths = ensure_videos(s, work, "h264")
    cores = len(os.sched_getaffinity(0))
    for workers in sorted({1, max(1, cores // 2), max(1, cores - 1)}):
        if sec.left() < (1.0 if s.tiny else 4.0):
            sec.skipped({"codec": "h264", "how": f"DataLoader, {workers} workers"})
            continue
        n = max(2 * workers, min(s.extract_max_videos, workers * (6 if s.tiny else 12)))
        ds = VideoClipsDataset(video_list(paths, n, work), s.spec, num_clips=s.num_clips, raw=True)
        loader = build_loader(ds, None, train=False, num_workers=workers, device=sec.device, prefetch_factor=4)
        it = iter(loader)
        next(it)  # worker start-up excluded
        t0, got = time.perf_counter(), 0
        for _ in it:
            got += 1
        wall = time.perf_counter() - t0
        del it, loader
        sec.row(
            codec="h264",
            how=f"DataLoader, {workers} workers",
            videos=got,
            frames_s_wall=got * s.video_frames / wall,
            clips_s_wall=got * s.num_clips / wall,
        )


# section: extract ----------------------------------------------------------------------------------------------
def section_extract(sec: Section) -> None:
    from p3d.data import VideoClipsDataset
    from p3d.data.loader import probe_decode_rate
    from p3d.representation.extract import build_meta, extract_features, forward_throughput

    dev, s, work = sec.device, sec.sizes, Path(sec.args.work)
    amp = "bf16" if dev.type == "cuda" or s.tiny else "none"
    paths = ensure_videos(s, work, "h264")
    model = build("p3d199", s, num_classes=101).eval()
    spec = model.input_spec
    fwd = forward_throughput(model, spec, ["pool5"], s.extract_batch, iters=3 if s.tiny else 10, device=dev, amp=amp)
    decode = probe_decode_rate(VideoClipsDataset(video_list(paths, 2, work), spec, num_clips=s.num_clips, raw=True))
    per_video = s.num_clips
    sec.data["summary"].update(forward_clips_s=fwd, decode_clips_s_per_worker=decode * per_video, amp=amp)
    sec.note(
        f"P3D-199 forward {fwd:.1f} clips/s (batch {s.extract_batch}, {amp}); "
        f"one worker decodes {decode * per_video:.1f} clips/s"
    )
    meta = build_meta(model, ["pool5"], num_clips=s.num_clips, flip=False, map_pooling="max", class_names=None)
    cores = len(os.sched_getaffinity(0))
    runs: list[int | str] = ["auto", max(1, cores - 1), 8, 4, 1] if not s.tiny else ["auto", 0, 1]
    seen = set()
    runs = [w for w in runs if not (w in seen or seen.add(w)) and (w == "auto" or w < cores)]
    # warm-up: cuDNN autotuning and the first allocation of this batch size stay out of the runs
    extract_features(model, video_list(paths, 2, work), work / "store-warmup", meta, num_clips=s.num_clips,
                     batch_size=s.extract_batch, num_workers=0, device=dev, amp=amp, progress=False)  # fmt: skip
    shutil.rmtree(work / "store-warmup", ignore_errors=True)
    for workers in runs:
        est_workers = max(1, cores - 1) if workers == "auto" else max(1, int(workers))
        est = min(fwd, est_workers * decode * per_video) / per_video  # videos/s
        n = int(min(s.extract_max_videos, max(2 * est_workers, 4, s.extract_seconds * est)))
        what = {"workers": workers, "videos": n}
        if sec.left() < (2.0 if s.tiny else 5.0) + n / max(est, 1e-9) * 1.5:
            sec.skipped(what)
            continue
        store = work / f"store-{workers}"
        shutil.rmtree(store, ignore_errors=True)
        reset_peak(dev)
        st = extract_features(model, video_list(paths, n, work), store, meta, num_clips=s.num_clips,
                              batch_size=s.extract_batch, num_workers=workers, device=dev, amp=amp,
                              progress=False)  # fmt: skip
        shutil.rmtree(store, ignore_errors=True)
        busy = st.forward_seconds / st.seconds
        row = {
            **what,
            "workers_used": st.workers,
            "clips": st.clips,
            "seconds": st.seconds,
            "clips_s": st.clips_per_second,
            "frames_s_decoded": st.written * s.video_frames / st.seconds,
            "ratio_to_forward": st.clips_per_second / fwd,
            "forward_share": busy,
            "loader_wait_share": st.wait_seconds / st.seconds,
            "gpu_idle_share" if dev.type == "cuda" else "device_idle_share": 1.0 - busy,
            "peak_mib": peak_mib(dev),
        }
        if st.loader is not None:
            row["plan"] = st.loader.describe()
        if st.bad:
            row["bad"] = len(st.bad)
        sec.row(**row)


# section: flow -------------------------------------------------------------------------------------------------
def section_flow(sec: Section) -> None:
    try:
        from p3d.flow import tvl1
    except ImportError as e:
        sec.note(f"p3d.flow is not in this build ({e}); the TV-L1 engine is measured once it is merged")
        sec.data["summary"]["skipped"] = True
        return
    from p3d.data import read_video
    from p3d.flow import rgb_to_grey

    dev, s = sec.device, sec.sizes
    video = ensure_videos(s, Path(sec.args.work), "h264")[0]
    grey = torch.from_numpy(rgb_to_grey(read_video(video, size=s.flow_hw))).float()
    n = s.flow_batch
    idx = torch.arange(n) % (len(grey) - 1)
    f0, f1 = grey[idx].to(dev), grey[idx + 1].to(dev)
    for compile_ in (False, True):
        what = {"engine": "tvl1", "size": f"{s.flow_hw[1]}x{s.flow_hw[0]}", "batch": n, "compile": compile_}
        if compile_ and (s.tiny or sec.left() < 60):
            sec.skipped(what, "compiled engine only on a full run with 60 s left")
            continue
        t0 = time.perf_counter()
        tvl1(f0, f1, compile=compile_)
        sync(dev)
        first = time.perf_counter() - t0
        if sec.left() < first * 1.5:
            sec.row(**what, pairs_s=n / first, first_call_s=first, status="one call only (time budget)")
            continue
        t = statistics.median(timed(lambda c=compile_: tvl1(f0, f1, compile=c), dev, 0, 3, sec.deadline))
        sec.row(**what, pairs_s=n / t, first_call_s=first)


SECTION_FUNCS: dict[str, Callable[[Section], None]] = {
    "equal": section_equal,
    "forward": section_forward,
    "train": section_train,
    "compile": section_compile,
    "decode": section_decode,
    "extract": section_extract,
    "flow": section_flow,
}


# the parent ----------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0)),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"),
        "default_conv_impl": dict(DEFAULT_CONV_IMPL),
        "P3D_CONV": os.environ.get("P3D_CONV"),
    }
    shm = shutil.disk_usage("/dev/shm") if os.path.isdir("/dev/shm") else None
    env["shm_free_mib"] = round(shm.free / MiB) if shm else None
    with contextlib.suppress(Exception):
        import av

        env["av"] = av.__version__
    with contextlib.suppress(Exception):
        import p3d

        env["p3d"] = p3d.__version__
    with contextlib.suppress(Exception):
        env["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip()
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        env.update(
            gpu=p.name,
            capability=f"{p.major}.{p.minor}",
            multiprocessors=p.multi_processor_count,
            memory_total_gib=round(total / 2**30, 1),
            memory_free_gib=round(free / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    return env


def section_budget(name: str, args: argparse.Namespace, device: torch.device) -> float:
    if name in args.budget_override:
        return args.budget_override[name]
    if args.tiny or device.type != "cuda":
        return TINY_BUDGET if args.tiny else 4 * BUDGETS[name]
    return BUDGETS[name]


_CHILDREN: set[subprocess.Popen] = set()
_INTERRUPTED = False


def _kill(proc: subprocess.Popen) -> None:
    """Kill a section child and everything in its session (DataLoader workers); the caller reaps it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _on_signal(signum: int, frame: Any) -> None:
    """``timeout`` (or Ctrl-C) stops the suite: the running child lives in its own session, so kill it here, or it
    would keep the GPU busy after the suite is gone; the results so far are written on the way out."""
    global _INTERRUPTED
    _INTERRUPTED = True
    for proc in list(_CHILDREN):
        _kill(proc)


def run_child(name: str, budget: float, args: argparse.Namespace, partial: Path) -> dict[str, Any]:
    """Run one section in a child process (its own session, so its DataLoader workers go with it) for at most
    ``budget`` seconds plus a grace period; returns its partial results, whatever happened."""
    cmd = [sys.executable, __file__, "--child", name, "--partial", str(partial), "--child-budget", str(budget)]
    cmd += ["--device", args.device, "--work", args.work, "--compile-backend", args.compile_backend]
    cmd += ["--tiny"] * args.tiny + ["--cudnn-benchmark"] * args.cudnn_benchmark
    for x in args.inject:
        cmd += ["--inject", x]
    if partial.exists():
        partial.unlink()
    proc = subprocess.Popen(cmd, start_new_session=True)
    _CHILDREN.add(proc)
    status, grace = None, min(5.0, max(2.0, 0.5 * budget))  # the child's own soft deadline leaves it ~8 % to exit
    try:
        rc = proc.wait(timeout=budget + grace)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.wait()
        rc, status = None, "timeout"
    finally:
        _CHILDREN.discard(proc)
    data: dict[str, Any] = {"rows": [], "notes": [], "summary": {}}
    with contextlib.suppress(Exception):
        data = json.loads(partial.read_text())
    data["returncode"] = rc
    if _INTERRUPTED:
        data["status"], data["error"] = "interrupted", "the suite was stopped (SIGTERM/SIGINT) during this section"
    elif status:
        data["status"] = status
        data["error"] = f"killed after {budget + grace:.0f} s (budget {budget:.0f} s)"
    elif rc != 0 and data.get("status") in (None, "running", "ok"):
        data["status"] = "failed"
        data["error"] = data.get("error") or f"child exited with code {rc}"
    return data


def write_results(results: dict[str, Any], out: Path) -> None:
    atomic_write_json(out / "gpu_suite.json", results)
    atomic_write_text(out / "gpu_suite.md", markdown(results))


COLUMNS = {
    "equal": ["check", "error", "tol", "ok", "worst"],
    "forward": [
        "model",
        "net",
        "impl",
        "dtype",
        "batch",
        "cudnn_benchmark",
        "ms",
        "clips_s",
        "tflops",
        "peak_mib",
        "status",
    ],  # fmt: skip
    "train": ["model", "net", "bn", "amp", "impl", "batch", "ms", "clips_s", "peak_mib", "loss_finite", "status"],
    "compile": [
        "model",
        "impl",
        "dtype",
        "batch",
        "backend",
        "eager_ms",
        "fused_ms",
        "compiled_ms",
        "compile_s",
        "speedup_over_fused",
        "max_rel_err",
        "status",
    ],  # fmt: skip
    "decode": [
        "codec",
        "how",
        "videos",
        "frames_s_per_core",
        "clips_s_per_core",
        "frames_s_wall",
        "clips_s_wall",
        "status",
    ],  # fmt: skip
    "extract": [
        "workers",
        "workers_used",
        "videos",
        "clips_s",
        "frames_s_decoded",
        "ratio_to_forward",
        "forward_share",
        "loader_wait_share",
        "gpu_idle_share",
        "device_idle_share",
        "plan",
        "status",
    ],  # fmt: skip
    "flow": ["engine", "size", "batch", "compile", "pairs_s", "first_call_s", "status"],
}


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return "" if v is None else str(v)


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    dev = env.get("gpu") or f"CPU ({env.get('cpu')}, {env.get('cores')} cores)"
    lines = [
        f"# p3d GPU suite: {dev}",
        "",
        f"torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, cuDNN {env.get('cudnn', '-')}, PyAV {env.get('av')}, "
        f"{env.get('cores')} cores, /dev/shm free {env.get('shm_free_mib')} MiB, p3d {env.get('p3d')} "
        f"({env.get('git_commit', '?')}); sizes {'tiny' if results['sizes']['tiny'] else 'full'}; "
        f"{results.get('elapsed_s', 0):.0f} s.",
    ]
    d = results.get("decisions", {})
    if d:
        kind = env["device"].split(":")[0]
        lines += [
            "",
            f"**Decision** — convolution implementation on `{kind}`: `{d.get('conv_impl')}` ({d.get('why')}).",
        ]
    for name in SECTIONS:
        sec = results["sections"].get(name)
        if sec is None:
            continue
        lines += ["", f"## {name}: {sec.get('status')} ({sec.get('seconds', 0):.0f} s of {sec.get('budget_s', 0):.0f})"]
        if sec.get("error"):
            lines += ["", f"Error: `{sec['error']}`"]
        lines += [f"- {n}" for n in sec.get("notes", [])]
        rows = sec.get("rows", [])
        cols = [c for c in COLUMNS[name] if any(c in r for r in rows)]
        if rows and cols:
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
        comps = sec.get("summary", {}).get("comparisons")
        if comps:
            keys = [
                "model",
                "dtype",
                "batch",
                "conv3d_speedup_over_views",
                "p3d_vs_2d_time_per_flop",
                "speedup_over_port",
            ]
            lines += ["", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_cell(c.get(k)) for k in keys) + " |" for c in comps]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="gpu_suite_out", help="folder for gpu_suite.json and gpu_suite.md")
    ap.add_argument("--work", default=None, help="scratch folder: generated videos, stores (default: a temp dir)")
    ap.add_argument("--device", default="auto", help="auto (CUDA if available), cuda, cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: seconds on a CPU (the test suite)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole suite (default: the sum)")
    ap.add_argument("--section-budget", action="append", default=[], metavar="NAME=SECONDS", help="override")
    ap.add_argument("--in-process", action="store_true", help="run the sections in this process (no isolation)")
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend (tests: eager)")
    ap.add_argument(
        "--cudnn-benchmark", action="store_true", help="turn cuDNN's autotuner on everywhere (default: off, as p3d)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--partial", help=argparse.SUPPRESS)
    ap.add_argument("--child-budget", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--inject", action="append", default=[], help=argparse.SUPPRESS)  # NAME:fail|hang (tests)
    args = ap.parse_args(argv)
    args.budget_override = {k: float(v) for k, v in (x.split("=", 1) for x in args.section_budget)}
    if args.child:
        sec = Section(args.child, args.child_budget, args, Path(args.partial))
        sec.save()
        run_guarded(sec, SECTION_FUNCS[args.child])
        return 0

    names = [n for n in args.sections.split(",") if n]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="p3d_gpu_suite_")
        args.work = tmp.name
    Path(args.work).mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    t_start = time.perf_counter()
    budgets = {n: section_budget(n, args, device) for n in names}
    total = args.budget if args.budget is not None else sum(budgets.values())
    results: dict[str, Any] = {
        "suite": "p3d benchmarks/gpu_suite.py",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "environment": environment(device),
        "sizes": asdict(Sizes.for_device(device, args.tiny)),
        "budget_s": total,
        "sections": {},
    }
    print(f"p3d GPU suite on {results['environment'].get('gpu', device)}: sections {names}, budget {total:.0f} s")
    write_results(results, out)
    handlers = {}
    if not args.in_process:
        handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_sections(names, budgets, total, t_start, args, results, out)
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
    print(markdown(results))
    print(f"wrote {out / 'gpu_suite.json'} and {out / 'gpu_suite.md'} in {time.perf_counter() - t_start:.0f} s")
    if tmp is not None:
        tmp.cleanup()
    return 0


def run_sections(
    names: list[str],
    budgets: dict[str, float],
    total: float,
    t_start: float,
    args: argparse.Namespace,
    results: dict[str, Any],
    out: Path,
) -> None:
    """Run the sections in order within the suite's total budget, rewriting the results after each."""
    for name in names:
        if _INTERRUPTED:
            break
        left = total - (time.perf_counter() - t_start)
        budget = max(0.0, min(budgets[name], left))
        t0 = time.perf_counter()
        if budget < 3:
            data = {"status": "skipped", "error": "the suite's total budget is spent", "rows": [], "notes": []}
        elif args.in_process:
            sec = Section(name, budget, args)
            run_guarded(sec, SECTION_FUNCS[name])
            data = sec.data
        else:
            data = run_child(name, budget, args, Path(args.work) / f"partial-{name}.json")
        data.update(seconds=round(time.perf_counter() - t0, 1), budget_s=budget)
        results["sections"][name] = data
        fwd = results["sections"].get("forward", {}).get("rows", [])
        trn = results["sections"].get("train", {}).get("rows", [])
        results["decisions"] = {"device_type": results["environment"]["device"].split(":")[0]}
        results["decisions"].update(conv_impl_decision(fwd, trn))
        results["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        write_results(results, out)
        print(f"== {name}: {data['status']} in {data['seconds']:.0f} s (budget {budget:.0f} s)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
