"""Encoding local descriptors: throughput, peak memory and fitting time of FV, VLAD and FV-VAE, side by side.

    python benchmarks/bench_encode.py --videos 16 --repeats 3 --sample 50000

A "video" is 20 clips x 25 positions = 500 local descriptors of 2048-d (res5c of P3D ResNet at 160 x 160), drawn
from a synthetic non-negative low-rank-plus-noise distribution (like post-ReLU activations).  For every encoder
(FV and VLAD with K = 64, with PCA to 256 and without; FV-VAE with the paper's latent 256 and a smaller one)
the script

* fits it on a sample of ``--sample`` descriptors (seconds; FV-VAE: ``--vae-steps`` unsupervised steps of 512
  descriptors, reported per step: the default is 2000 steps, plus 1000 end-to-end steps with labels),
* encodes ``--videos`` resident videos with ``encode_many`` (fed by a generator), ``--repeats`` times: median
  videos/s of wall time and per CPU-second of this process (all its threads; less sensitive to other jobs on a
  shared machine); then once more for memory: the peak of Python allocations (tracemalloc: NumPy's) and the peak RSS
  growth (sampled every 2 ms: includes torch's buffers), both including the ``(videos, E)`` output, and
* projects the encoding time and the encodings' size for UCF101 (13,320 videos).

Mean pooling of the same descriptors is the reference (what pool5 of the video amounts to).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
import tracemalloc

import numpy as np
import torch

from p3d.representation.encoders import FisherVectorEncoder, FVVAEEncoder, VLADEncoder

UCF101_VIDEOS = 13320


class RSSPeak:
    """Peak resident set size growth (bytes) while the ``with`` block runs, sampled from /proc/self/statm."""

    def __init__(self, every: float = 0.002) -> None:
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self.base)
            time.sleep(self.every)

    def __enter__(self) -> RSSPeak:
        self.base = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss() - self.base)


class Descriptors:
    """Synthetic 2048-d non-negative descriptors: ReLU(z B + noise), z ~ N(0, I_64)."""

    def __init__(self, dim: int = 2048, rank: int = 64, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.basis = (rng.standard_normal((rank, dim)) / np.sqrt(rank)).astype(np.float32)
        self.offset = rng.normal(-0.3, 0.3, dim).astype(np.float32)
        self.dim, self.rank = dim, rank

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.rank), dtype=np.float32)
        x = z @ self.basis + self.offset + 0.3 * rng.standard_normal((n, self.dim), dtype=np.float32)
        return np.maximum(x, 0)

    def videos(self, count: int, per_video: int, seed: int):
        for v in range(count):
            yield self.draw(per_video, seed * 100_000 + v)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=16, help="videos encoded per repeat")
    p.add_argument("--clips", type=int, default=20)
    p.add_argument("--positions", type=int, default=25, help="local descriptors per clip (res5c 5 x 5)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--sample", type=int, default=50_000, help="descriptors the encoders are fitted on")
    p.add_argument("--components", type=int, default=64)
    p.add_argument("--pca", type=int, default=256)
    p.add_argument("--gmm-iter", type=int, default=100, help="EM iterations at most (sklearn GaussianMixture)")
    p.add_argument("--kmeans-iter", type=int, default=300, help="k-means iterations at most (sklearn KMeans)")
    p.add_argument("--vae-steps", type=int, default=100, help="unsupervised steps timed (then extrapolated)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", nargs="*", default=None, help="run only these encoder rows (by name)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="for FV-VAE")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    per_video = args.clips * args.positions
    data = Descriptors(args.dim)
    sample = data.draw(args.sample, seed=1)
    k, pca = args.components, args.pca
    rows = {
        f"FV K={k} PCA {pca}": lambda: FisherVectorEncoder(k, pca_dim=pca, max_iter=args.gmm_iter),
        f"FV K={k} no PCA": lambda: FisherVectorEncoder(k, max_iter=args.gmm_iter),
        f"VLAD K={k} PCA {pca}": lambda: VLADEncoder(k, pca_dim=pca, max_iter=args.kmeans_iter),
        f"VLAD K={k} no PCA": lambda: VLADEncoder(k, max_iter=args.kmeans_iter),
        "FV-VAE latent 256": lambda: FVVAEEncoder(latent=256, steps=args.vae_steps, device=args.device),
        "FV-VAE latent 64": lambda: FVVAEEncoder(latent=64, steps=args.vae_steps, device=args.device),
    }
    if args.only:
        rows = {name: make for name, make in rows.items() if any(o.lower() in name.lower() for o in args.only)}
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
          f"FV-VAE device {args.device}; video = {args.clips} clips x {args.positions} = {per_video} descriptors "
          f"of {args.dim}-d; fit sample {args.sample}")  # fmt: skip

    videos = [data.draw(per_video, seed=100 + v) for v in range(args.videos)]  # resident: time encoding only
    speeds, cpu_speeds = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for v in videos:
            v.mean(0)
        speeds.append(args.videos / (time.perf_counter() - t0))
        cpu_speeds.append(args.videos / max(time.process_time() - c0, 1e-9))
    results = [{"encoder": "mean pooling", "dim": args.dim, "fit_s": 0.0, "videos_per_s": statistics.median(speeds),
                "videos_per_cpu_s": statistics.median(cpu_speeds)}]  # fmt: skip

    for name, make in rows.items():
        enc = make()
        t0, c0 = time.perf_counter(), time.process_time()
        enc.fit(sample)
        fit_s = time.perf_counter() - t0
        extra = {"fit_cpu_s": time.process_time() - c0}
        if isinstance(enc, FVVAEEncoder):
            extra["fit_s_per_step"] = fit_s / max(args.vae_steps, 1)
        enc.encode_many(videos[:2])  # warm-up
        speeds, cpu_speeds = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = enc.encode_many(iter(videos))  # a generator: nothing is pre-allocated from a length
            speeds.append(args.videos / (time.perf_counter() - t0))
            cpu_speeds.append(args.videos / (time.process_time() - c0))
            del out
        tracemalloc.start()  # one more run for memory (tracemalloc slows allocation a little)
        with RSSPeak() as rss:
            out = enc.encode_many(iter(videos))
        _, py_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert out.shape == (args.videos, enc.dim)
        del out
        row = {
            "encoder": name,
            "dim": enc.dim,
            "fit_s": fit_s,
            "videos_per_s": statistics.median(speeds),
            "videos_per_s_all": speeds,
            "videos_per_cpu_s": statistics.median(cpu_speeds),
            "tracemalloc_peak_mib": py_peak / 2**20,
            "rss_peak_mib": rss.peak / 2**20,
            "output_mib": args.videos * enc.dim * 4 / 2**20,
            **extra,
        }
        results.append(row)
        print(json.dumps(row))

    print()
    print("| encoder | E | fit (s) | videos/s | videos/CPU-s | peak NumPy (tracemalloc) | peak RSS growth "
          "| UCF101 encode (wall) | UCF101 encode (CPU) | UCF101 encodings (float32) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        hours = UCF101_VIDEOS / r["videos_per_s"] / 3600
        cpu_hours = UCF101_VIDEOS / r["videos_per_cpu_s"] / 3600
        size = UCF101_VIDEOS * r["dim"] * 4 / 2**30
        fit = f"{r['fit_s']:.1f}"
        if "fit_s_per_step" in r:
            fit += f" ({r['fit_s_per_step']:.2f}/step)"
        mem = (
            (f"{r['tracemalloc_peak_mib']:.0f} MiB", f"{r['rss_peak_mib']:.0f} MiB")
            if "rss_peak_mib" in r
            else ("-", "-")
        )
        print(f"| {r['encoder']} | {r['dim']:,} | {fit} | {r['videos_per_s']:.1f} | {r['videos_per_cpu_s']:.1f} "
              f"| {mem[0]} | {mem[1]} | {hours:.2f} h | {cpu_hours:.2f} CPU-h | {size:.1f} GiB |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cpu": cpu_model(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
