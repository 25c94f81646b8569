"""How to store quantised optical flow: size on disk and clip read speed of the candidate formats.
Results go to the "Optical flow storage" section of BENCHMARKS.md (why ``p3d flow`` writes ``.flow.mkv``).

    python benchmarks/bench_flow_storage.py                  # 2 videos x 65 fields at 182x242, 16-field clips

The flow is real TV-L1 output (OpenCV's DualTVL1, the reference engine, default parameters) of "real-like
footage": a panning, zooming textured background with an independently moving textured disc
(:func:`p3d.flow.synthetic.moving_scene`), encoded with x264 CRF 23 and decoded again, quantised to uint8 images
as ``p3d flow`` does (bound 20 px).  Each format stores the same images:

* ``flow.mkv`` — ``p3d flow``'s file: FFV1 in Matroska, x and y as two planes of one ``yuv444p`` frame
  (:mod:`p3d.data.flowfile`), read with :class:`p3d.data.flowfile.FlowReader` (seek + decode the clip's fields);
* JPEG folders — ``flow_x_00001.jpg`` / ``flow_y_00001.jpg`` (TSN / denseflow, quality 95 as OpenCV's
  ``imwrite`` default), read with :class:`p3d.data.sources.FrameFolder` (lossy: the mean absolute error is given);
* PNG folders — the same names as ``.png`` (lossless), read with ``FrameFolder``;
* ``.npz`` — one ``np.savez_compressed`` (T, H, W, 2) uint8 array per video: a clip needs the whole array
  decompressed;
* ``.npy`` — raw uint8, memory-mapped: a clip is a slice.

Read speed: ``--clips`` random 16-field clips (the training read: random start, whole frames, no resize) per
format, interleaved over ``--repeats`` rounds, median clips/s in one process on one thread, OS page cache warm
(the files are read once before timing: this measures decoding, not the disk).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from p3d.data import read_video
from p3d.data.flowfile import FlowReader, write_flow_file
from p3d.data.sources import FrameFolder
from p3d.data.synthetic import write_video
from p3d.flow import compute_flow, quantize_flow
from p3d.flow.synthetic import moving_scene


def flow_images(size: tuple[int, int], frames: int, seed: int) -> np.ndarray:
    scene = moving_scene(size, frames, np.random.default_rng(seed))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.mp4"
        write_video(path, scene.frames, crf=23, gop=12)
        decoded = read_video(path)
    flow = compute_flow(decoded, engine="opencv")
    return quantize_flow(flow).permute(0, 2, 3, 1).numpy()  # (T, H, W, 2) uint8


def write_folder(folder: Path, images: np.ndarray, ext: str) -> None:
    folder.mkdir(parents=True)
    for t, img in enumerate(images):
        for k, name in enumerate(("flow_x", "flow_y")):
            kw = {"quality": 95} if ext == ".jpg" else {}
            Image.fromarray(img[..., k]).save(folder / f"{name}_{t + 1:05d}{ext}", **kw)


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir())
    return path.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(182, 242), metavar=("H", "W"))
    ap.add_argument("--videos", type=int, default=2)
    ap.add_argument("--frames", type=int, default=66, help="frames per video (fields = frames - 1)")
    ap.add_argument("--clip-len", type=int, default=16)
    ap.add_argument("--clips", type=int, default=20, help="clips per format per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="keep the files here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="flowstore-"))
    t0 = time.perf_counter()
    videos = [flow_images(tuple(args.size), args.frames, seed) for seed in range(args.videos)]
    print(f"computed {sum(len(v) for v in videos)} fields in {time.perf_counter() - t0:.0f} s")
    fmts = ("flow.mkv", "jpg", "png", "npz", "npy")
    paths: dict[str, list[Path]] = {f: [] for f in fmts}
    write_s: dict[str, float] = dict.fromkeys(fmts, 0.0)
    for i, imgs in enumerate(videos):
        for f in fmts:
            t = time.perf_counter()
            if f == "flow.mkv":
                p = write_flow_file(root / f"v{i}.flow.mkv", imgs)
            elif f in ("jpg", "png"):
                p = root / f"v{i}_{f}"
                write_folder(p, imgs, "." + f)
            elif f == "npz":
                p = root / f"v{i}.npz"
                np.savez_compressed(p, flow=imgs)
            else:
                p = root / f"v{i}.npy"
                np.save(p, imgs)
            write_s[f] += time.perf_counter() - t
            paths[f].append(p)
    fields = sum(len(v) for v in videos)
    err = {}
    for f in fmts:
        got = []
        for p, imgs in zip(paths[f], videos, strict=True):
            n = len(imgs)
            if f == "flow.mkv":
                with FlowReader(p) as r:
                    got.append(r.get_frames(np.arange(n)))
            elif f in ("jpg", "png"):
                got.append(FrameFolder(p, "flow").get_frames(np.arange(n)))
            elif f == "npz":
                got.append(np.load(p)["flow"])
            else:
                got.append(np.load(p, mmap_mode="r")[:])
        err[f] = float(np.mean([np.abs(g.astype(int) - v).mean() for g, v in zip(got, videos, strict=True)]))

    def read_clip(f: str, p: Path, start: int) -> np.ndarray:
        idx = np.arange(start, start + args.clip_len)
        if f == "flow.mkv":
            with FlowReader(p) as r:
                return r.get_frames(idx)
        if f in ("jpg", "png"):
            return FrameFolder(p, "flow").get_frames(idx)
        if f == "npz":
            with np.load(p) as z:
                return z["flow"][idx]
        return np.array(np.load(p, mmap_mode="r")[idx])

    rng = np.random.default_rng(0)
    rates: dict[str, list[float]] = {f: [] for f in fmts}
    for _ in range(args.repeats):
        for f in fmts:
            picks = [(int(rng.integers(args.videos)), None) for _ in range(args.clips)]
            t = time.perf_counter()
            for v, _ in picks:
                start = int(rng.integers(len(videos[v]) - args.clip_len + 1))
                clip = read_clip(f, paths[f][v], start)
                assert clip.shape == (args.clip_len, *args.size, 2)
            rates[f].append(args.clips / (time.perf_counter() - t))
    raw = fields * args.size[0] * args.size[1] * 2
    cpu = platform.processor() or "?"
    with open("/proc/cpuinfo") as fh:
        info = fh.read()
    fam = next((ln.split(":")[1].strip() for ln in info.splitlines() if ln.startswith("cpu family")), "?")
    model = next((ln.split(":")[1].strip() for ln in info.splitlines() if ln.startswith("model\t")), "?")
    name = next((ln.split(":")[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
    print(f"CPU: {name} (family {fam}, model {model}), {os.cpu_count()} cores; 1 thread; {args.videos} videos x "
          f"{len(videos[0])} fields of {args.size[0]}x{args.size[1]}; {args.clip_len}-field clips; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| format | bytes/field | vs raw uint8 | mean abs error | write fields/s | read clips/s (median) |")
    print("|---|---:|---:|---:|---:|---:|")
    for f in fmts:
        total = sum(size_of(p) for p in paths[f])
        print(
            f"| {f} | {total / fields:,.0f} | {total / raw:.3f} | {err[f]:.3f} | {fields / write_s[f]:.0f} | "
            f"{statistics.median(rates[f]):.1f} |"
        )
    if not args.out:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
