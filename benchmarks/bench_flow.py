"""TV-L1 optical flow: the PyTorch engine against OpenCV's DualTVL1OpticalFlow, speed and accuracy.
Results go to the "Optical flow (TV-L1)" section of BENCHMARKS.md.

    python benchmarks/bench_flow.py                      # CPU: OpenCV vs torch eager / compiled, 320x240
    python benchmarks/bench_flow.py --device cuda        # GPU: torch pairs/s at large batches (+ accuracy)

Accuracy (mean end-point error, px) on
  (a) generated pairs with exact ground truth: a smooth random texture translated (sub-pixel to 6 px), rotated
      (2 and 5 degrees) and zoomed (3 and 8 %), frames rounded to uint8;
  (b) "real-like footage": a colour clip of a panning, zooming textured background with an independently moving
      textured disc (motion boundaries, occlusions), encoded with x264 (CRF 23) through PyAV and decoded again, so
      the engines see compression artefacts; ground truth on the pixels where it is defined.
Speed: frame pairs per second on the decoded clip (b) (its pairs tiled up to ``--pairs``), both engines with the
same number of CPU threads, measured side by side in one process, interleaved over ``--repeats`` rounds; medians,
and the median of the per-round ratios to OpenCV.  The torch engine runs eager and with ``compile=True`` (its
one-off compilation is timed apart).  On a GPU, OpenCV (CPU) is timed on 16 of the pairs for reference.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from p3d.data import read_video
from p3d.data.synthetic import write_video
from p3d.flow import compute_flow, opencv_tvl1, rgb_to_grey, tvl1
from p3d.flow.synthetic import motion_pair, moving_scene

GT_CASES = [
    ("translate", 0.5),
    ("translate", 2.5),
    ("translate", 6.0),
    ("rotate", 2.0),
    ("rotate", 5.0),
    ("zoom", 0.03),
    ("zoom", 0.08),
]


def epe(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Mean end-point error over all pairs of ``(N, 2, H, W)`` flows (over ``valid`` pixels when given)."""
    d = (a.float().cpu() - b.float().cpu()).norm(dim=1)
    return float(d.mean() if valid is None else d[valid].mean())


def encoded_scene(size: tuple[int, int], frames: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Clip (b): rendered, encoded to H.264 (CRF 23) and decoded; returns frames, GT flow, valid mask."""
    scene = moving_scene(size, frames, np.random.default_rng(seed))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.mp4"
        write_video(path, scene.frames, crf=23, gop=12)
        decoded = read_video(path)
    return decoded, torch.from_numpy(scene.flow), torch.from_numpy(scene.valid)


def run_torch(f0: torch.Tensor, f1: torch.Tensor, batch: int, compile: bool, device: torch.device) -> torch.Tensor:
    out = []
    for s in range(0, f0.shape[0], batch):
        out.append(tvl1(f0[s : s + batch], f1[s : s + batch], compile=compile))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(out)


def accuracy(args: argparse.Namespace, device: torch.device, scene: tuple) -> list[tuple[str, float, float, float]]:
    """Rows ``(dataset, torch vs OpenCV, torch vs GT, OpenCV vs GT)``; NaN where OpenCV is skipped."""
    rng = np.random.default_rng(args.seed)
    size = (args.height, args.width)
    rows = []
    pairs = [motion_pair(kind, size, m, rng) for kind, m in GT_CASES for _ in range(args.gt_pairs)]
    cases = [case for case in GT_CASES for _ in range(args.gt_pairs)]
    f0 = torch.tensor(np.stack([p.frame0 for p in pairs]))
    f1 = torch.tensor(np.stack([p.frame1 for p in pairs]))
    gt = torch.tensor(np.stack([p.flow for p in pairs]))
    valid = torch.tensor(np.stack([p.valid for p in pairs]))
    ours = run_torch(f0.to(device).float(), f1.to(device).float(), args.accuracy_batch, args.compile_accuracy, device)
    ref = opencv_tvl1(f0, f1) if args.opencv else None
    units = {"translate": "px", "rotate": "deg", "zoom": "scale"}
    for case in GT_CASES + [None]:
        sel = torch.tensor([case in (c, None) for c in cases])
        if case is None:
            name = f"(a) all {int(sel.sum())} pairs"
        else:
            kind, m = case
            name = f"(a) {kind} {1 + m if kind == 'zoom' else m} {units[kind]}"
        rows.append(
            (
                name,
                epe(ours[sel], ref[sel]) if ref is not None else float("nan"),
                epe(ours[sel], gt[sel], valid[sel]),
                epe(ref[sel], gt[sel], valid[sel]) if ref is not None else float("nan"),
            )
        )
    frames, gt_b, valid_b = scene
    ours_b = compute_flow(frames, batch_size=args.accuracy_batch, device=device, compile=args.compile_accuracy)
    ref_b = compute_flow(frames, engine="opencv") if args.opencv else None
    rows.append(
        (
            f"(b) H.264 clip ({gt_b.shape[0]} pairs)",
            epe(ours_b, ref_b) if ref_b is not None else float("nan"),
            epe(ours_b, gt_b, valid_b),
            epe(ref_b, gt_b, valid_b) if ref_b is not None else float("nan"),
        )
    )
    return rows


def speed(args: argparse.Namespace, device: torch.device, frames: np.ndarray) -> None:
    grey = torch.from_numpy(rgb_to_grey(frames))
    reps = max(1, -(-args.pairs // (grey.shape[0] - 1)))  # tile the clip's pairs up to --pairs
    f0 = torch.cat([grey[:-1]] * reps)[: args.pairs]
    f1 = torch.cat([grey[1:]] * reps)[: args.pairs]
    f0d, f1d = f0.to(device).float(), f1.to(device).float()
    configs: list[tuple[str, object]] = []
    cv_pairs = args.pairs if device.type == "cpu" else min(args.pairs, 16)
    if args.opencv:
        configs.append(("OpenCV DualTVL1 (pair by pair, CPU)", lambda: opencv_tvl1(f0[:cv_pairs], f1[:cv_pairs])))
    for compile in ([False] if args.eager else []) + ([True] if args.compile else []):
        for b in args.batch_sizes:
            name = f"torch {'compiled' if compile else 'eager'}, batch {b}"
            configs.append((name, lambda b=b, c=compile: run_torch(f0d, f1d, b, c, device)))
    t0 = time.perf_counter()
    for name, fn in configs:  # warm-up round: torch.compile's compilations, caches
        if "compiled" in name:
            fn()
    if args.compile:
        print(f"warm-up round of the compiled configurations (compilation included): {time.perf_counter() - t0:.1f} s")
    # pairs per wall-clock second and per CPU second of this process, of each configuration in each round
    rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    cpu_rates: dict[str, list[float]] = {name: [] for name, _ in configs}
    for r in range(args.repeats):
        for name, fn in configs:
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            n = cv_pairs if name.startswith("OpenCV") else args.pairs
            rates[name].append(n / (time.perf_counter() - t0))
            cpu_rates[name].append(n / (time.process_time() - c0))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{v[-1]:.2f}" for v in rates.values()))
    print(f"\n{args.pairs} pairs at {args.width}x{args.height} on {device}, {torch.get_num_threads()} CPU threads")
    print("| engine | pairs/s | vs OpenCV | pairs per CPU-second | vs OpenCV |\n|---|---:|---:|---:|---:|")
    for name in rates:
        cells = []
        for table in (rates, cpu_rates):
            base = table[configs[0][0]] if args.opencv else None
            ratio = statistics.median(x / b for b, x in zip(base, table[name], strict=True)) if base else float("nan")
            cells += [f"{statistics.median(table[name]):.2f}", f"{ratio:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("(medians over rounds; ratios are medians of the per-round ratios)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--pairs", type=int, default=None, help="pairs timed per round (default 16 CPU, 512 GPU)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 4 8 16 (CPU), 64 128 256 (GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch and OpenCV threads (CPU)")
    p.add_argument("--frames", type=int, default=17, help="frames of the encoded clip (b)")
    p.add_argument("--gt-pairs", type=int, default=2, help="pairs per motion in (a)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--opencv", action=argparse.BooleanOptionalAction, default=True, help="include OpenCV (CPU)")
    p.add_argument("--no-eager", dest="eager", action="store_false")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false")
    p.add_argument("--no-speed", dest="speed", action="store_false")
    args = p.parse_args()
    device = torch.device(args.device)
    gpu = device.type != "cpu"
    args.pairs = args.pairs or (512 if gpu else 16)
    args.batch_sizes = args.batch_sizes or ([64, 128, 256] if gpu else [1, 4, 8, 16])
    args.accuracy_batch = max(args.batch_sizes)
    args.compile_accuracy = args.compile
    if args.opencv:
        try:
            import cv2
        except ImportError:
            print('OpenCV is not installed (pip install "p3d[flow]"): the torch engine only')
            args.opencv = False
        else:
            cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"torch {torch.__version__}, device {device}, CPU {cpu}, {args.threads} threads")
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    scene = encoded_scene((args.height, args.width), args.frames, args.seed)
    if args.speed:
        speed(args, device, scene[0])
    if args.accuracy:
        rows = accuracy(args, device, scene)
        print("\n| data | torch vs OpenCV | torch vs GT | OpenCV vs GT |\n|---|---:|---:|---:|")
        for name, a, b, c in rows:
            print(f"| {name} | {a:.3f} | {b:.3f} | {c:.3f} |")


if __name__ == "__main__":
    main()
