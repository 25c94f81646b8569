"""Data pipeline throughput: training-clip path per core, before/after ``p3d prepare``, DataLoader workers,
and the P3D-63 training step for comparison.  Results go to the "Data pipeline" section of BENCHMARKS.md.

    python benchmarks/bench_data.py [--clips 200] [--workdir /tmp/p3d_bench_data] [--no-model]

The training-clip path = open the file, index it, seek, decode 16 frames, resize to 182x242 in the RGB
conversion, random 160x160 crop + flip (uint8); "+ float" adds the normalisation to a (3, 16, 160, 160)
float32 tensor.  The frame index cache is cleared before every clip, so each clip pays the full open cost
(as in training over a dataset much larger than the cache).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import numpy as np
import torch

from p3d.data import ClipDataset, Sample, VideoReader, build_loader, sample_train_clip
from p3d.data.prepare import prepare_tree
from p3d.data.synthetic import _texture
from p3d.data.transforms import ClipTransform, normalize
from p3d.data.video import clear_index_cache
from p3d.spec import InputSpec


def make_source(path: Path, h: int, w: int, frames: int, seed: int, gop: int = 250) -> None:
    """A panning textured scene with a moving blob, H.264 as a camera/web encoder would write it
    (x264 preset veryfast, CRF 23, key frame every ``gop`` frames, B-frames)."""
    rng = np.random.default_rng(seed)
    scene = (_texture(rng, h + frames, w + 2 * frames) * 255).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"preset": "veryfast", "crf": "23", "g": str(gop)}
        for t in range(frames):
            img = np.ascontiguousarray(scene[t // 2 : t // 2 + h, 2 * t : 2 * t + w])
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts = t
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def clip_rate(paths: list[Path], n: int, to_float: bool, seed: int = 0) -> tuple[float, float]:
    """Training clips per wall-clock second and per CPU second of this process (1 torch thread, 1 decoder
    thread).  On a shared machine the CPU-time rate is the per-core rate."""
    spec = InputSpec()
    tf = ClipTransform(spec, train=True)
    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        clear_index_cache()
        path = paths[int(rng.integers(len(paths)))]
        with VideoReader(path, threads=1) as r:
            idx = sample_train_clip(r.num_frames, spec.clip_len, 1, rng)
            frames = r.get_frames(idx, size=tf.decode_size)
        crop = tf.crop_flip(frames, rng)
        if to_float:
            normalize(crop, spec)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def loader_rate(paths: list[Path], workers: int, batches: int, batch_size: int = 8) -> float:
    ds = ClipDataset([Sample(str(p), (0,), p.stem) for p in paths] * 64, InputSpec(), seed=0)
    loader = build_loader(ds, batch_size, train=True, num_workers=workers, persistent_workers=False)
    it = iter(loader)
    next(it)  # start-up (worker spawn) excluded
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * batch_size / (time.perf_counter() - t0)
    del it
    return rate


def model_rate(batch_size: int = 4, steps: int = 2) -> float:
    from p3d.models import create_model

    model = create_model("p3d63", num_classes=101)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(batch_size, 3, 16, 160, 160)
    y = torch.randint(0, 101, (batch_size,))
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--workdir", default="/tmp/p3d_bench_data")
    ap.add_argument("--no-model", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.workdir)
    sets = {"320x240": (240, 320, 250), "320x240-gop12": (240, 320, 12), "1280x720": (720, 1280, 250)}
    src = {}
    for name, (h, w, gop) in sets.items():
        d = work / "src" / name
        d.mkdir(parents=True, exist_ok=True)
        src[name] = [d / f"v{k}.mp4" for k in range(args.videos)]
        for k, p in enumerate(src[name]):
            if not p.exists():
                make_source(p, h, w, args.frames, seed=k, gop=gop)
    t0 = time.perf_counter()
    report = prepare_tree(work / "src", work / "prepared", size=(182, 242), gop=8, workers=1)
    prep_s = time.perf_counter() - t0
    prep = {name: [work / "prepared" / name / p.name for p in ps] for name, ps in src.items()}
    print(f"prepare: {report.converted} videos converted in {prep_s:.1f} s")
    print("| source | files | clips/s per core, uint8 crop | clips/s per core, + float | (wall clips/s) |")
    print("|---|---|---|---|---|")
    for name, (_, _, gop) in sets.items():
        for label, paths in ((f"original (GOP {gop}, B-frames)", src[name]), ("after `p3d prepare`", prep[name])):
            a_wall, a_cpu = clip_rate(paths, args.clips, to_float=False)
            b_wall, b_cpu = clip_rate(paths, args.clips, to_float=True)
            print(f"| {name} | {label} | {a_cpu:.1f} | {b_cpu:.1f} | {a_wall:.1f} / {b_wall:.1f} |")
    print("\n| loader (ClipDataset, batch 8, float clips) | clips/s |\n|---|---|")
    for name, paths in (("320x240 original", src["320x240"]), ("1280x720 prepared", prep["1280x720"])):
        for workers in (1, 2):
            print(f"| {name}, {workers} worker(s) | {loader_rate(paths, workers, batches=12):.1f} |")
    if not args.no_model:
        torch.set_num_threads(2)
        print(f"\nP3D-63 training step (batch 4, 16x160x160, CPU, 2 threads): {model_rate():.2f} clips/s")


if __name__ == "__main__":
    main()
