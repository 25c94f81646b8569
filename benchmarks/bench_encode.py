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

From a real local-descriptor store (``--store-videos N``, or ``--store DIR`` for one written by ``p3d extract
--local``): the script writes N synthetic videos through ``FeatureWriter`` (float16 row group, as ``p3d extract
--local`` does; ``--store-pca`` stores them at that dimension instead, as ``--local-pca`` would), reports the disk
cost per video and for UCF101, the store's read rate (``LocalSet``, one video at a time, warm page cache), and
``encode_store`` end to end (read + encode + write the encoded store) for FV, VLAD and FV-VAE fitted on a small
sample: videos/s, the peak RSS growth and the peak of NumPy allocations, each store measured in a fresh process, at
two store sizes to show that memory does not grow with the store::

    python benchmarks/bench_encode.py --store-videos 96 --only none --sample 10000 --gmm-iter 10 --kmeans-iter 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from p3d.representation.encode import encode_store
from p3d.representation.encoders import FisherVectorEncoder, FVVAEEncoder, VLADEncoder, sample_descriptors
from p3d.representation.local import LocalSet, LocalSpec, disk_cost
from p3d.representation.store import FeatureWriter, list_parts

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
    p.add_argument("--store-videos", type=int, default=0, help="also benchmark a store of N synthetic videos")
    p.add_argument("--store", default=None, help="benchmark this local-descriptor store (p3d extract --local)")
    p.add_argument("--store-pca", type=int, default=None, help="synthetic store at this (PCA-reduced) dimension")
    p.add_argument("--workdir", default=None, help="where the synthetic stores go (default: a temporary folder)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Descriptors(args.dim)
    if args.store:  # one store, this process (also how the --store-videos run measures each of its stores)
        rows = measure_store(args, Path(args.store))
        print_store_table(rows)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "cpu": cpu_model(), "store": rows}, f, indent=1)
        return
    per_video = args.clips * args.positions
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
    store_results = store_benchmark(args, data) if args.store_videos else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "cpu": cpu_model(), "results": results, "store": store_results}, f, indent=1)


def write_store(path: Path, data: Descriptors, videos: int, clips: int, positions: int, dim: int | None) -> float:
    """A local-descriptor store of ``videos`` synthetic videos (as ``p3d extract --local`` writes it); returns the
    seconds of writing.  ``dim``: keep the first ``dim`` coordinates (stands for a PCA-reduced store)."""
    meta = {"model": "synthetic", "layers": ["pool5"], "num_clips": clips, "local": LocalSpec("res5c").to_meta()}
    t0 = time.perf_counter()
    with FeatureWriter(path, meta) as w:
        for v in range(videos):
            x = data.draw(clips * positions, seed=1000 + v).reshape(clips, positions, -1)[..., :dim]
            w.add(f"c{v % 8}/v{v:05d}", {"pool5": x.mean((0, 1))}, label=v % 8, local={"res5c": x})
    return time.perf_counter() - t0


def store_benchmark(args: argparse.Namespace, data: Descriptors) -> list[dict]:
    """Disk cost, read rate and encode_store rate/memory of two synthetic stores, each in its own process."""
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_encode_"))
    out = []
    for n in (args.store_videos // 3, args.store_videos):  # two sizes: memory must not grow with the store
        path = work / f"store{n}"
        shutil.rmtree(path, ignore_errors=True)
        seconds = write_store(path, data, n, args.clips, args.positions, args.store_pca)
        print(f"wrote {n} videos to {path} in {seconds:.1f} s ({n / seconds:.1f} videos/s)")
        child = [sys.executable, __file__, "--store", str(path), "--only", "none", "--videos", "1", "--json",
                 str(work / "child.json")]  # fmt: skip
        for flag in ("repeats", "sample", "components", "pca", "gmm_iter", "kmeans_iter", "vae_steps", "device"):
            child += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        if args.threads:
            child += ["--threads", str(args.threads)]
        subprocess.run(child, check=True)  # a fresh process per store: its peak memory is its own
        out += json.loads((work / "child.json").read_text())["store"]
    print_store_table(out)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return out


def measure_store(args: argparse.Namespace, path: Path) -> list[dict]:
    local = LocalSet(path)
    n, per_video = len(local), local.descriptors / len(local)
    size = sum(f.stat().st_size for f in list_parts(path))
    reads = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in local:
            pass
        reads.append(n / (time.perf_counter() - t0))
    read_vps = statistics.median(reads)
    k, pca = args.components, min(args.pca, local.dim)
    sample = sample_descriptors(iter(local), args.sample, seed=0)
    rows = {
        f"FV K={k} PCA {pca}": FisherVectorEncoder(k, pca_dim=pca, max_iter=args.gmm_iter),
        f"VLAD K={k} PCA {pca}": VLADEncoder(k, pca_dim=pca, max_iter=args.kmeans_iter),
        "FV-VAE latent 64": FVVAEEncoder(latent=64, steps=args.vae_steps, device=args.device),
    }
    print(f"{path}: {n} videos, {per_video:.0f} descriptors of {local.dim}-d each; {size / n / 1e6:.2f} MB per "
          f"video on disk (formula {disk_cost(1, int(per_video), local.dim) / 1e6:.2f} MB); read "
          f"{read_vps:.1f} videos/s = {read_vps * size / n / 1e6:.0f} MB/s")  # fmt: skip
    out = []
    with tempfile.TemporaryDirectory(prefix="bench_encode_out_") as tmp:
        for name, enc in rows.items():
            enc.fit(sample)
            dest = Path(tmp) / name.split()[0]
            speeds, cpu_speeds, peaks, py_peaks = [], [], [], []
            for r in range(args.repeats + 1):  # the last run for memory (tracemalloc slows allocation a little)
                shutil.rmtree(dest, ignore_errors=True)
                if r < args.repeats:
                    c0 = time.process_time()
                    stats = encode_store(path, dest, enc)
                    speeds.append(stats.videos_per_second)
                    cpu_speeds.append(n / (time.process_time() - c0))
                    continue
                tracemalloc.start()
                with RSSPeak() as rss:
                    encode_store(path, dest, enc)
                py_peaks.append(tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
                peaks.append(rss.peak)
            row = {
                "store": str(path),
                "videos": n,
                "dim": local.dim,
                "descriptors_per_video": per_video,
                "disk_bytes_per_video": size / n,
                "read_videos_per_s": read_vps,
                "encoder": name,
                "encoded_dim": enc.dim,
                "encode_store_videos_per_s": statistics.median(speeds),
                "encode_store_videos_per_cpu_s": statistics.median(cpu_speeds),
                "rss_peak_mib": max(peaks) / 2**20,
                "tracemalloc_peak_mib": max(py_peaks) / 2**20,
            }
            out.append(row)
            print(json.dumps(row))
    return out


def print_store_table(out: list[dict]) -> None:
    print()
    print("| store | encoder | E | disk per video | UCF101 on disk | read videos/s | encode_store videos/s "
          "| videos/CPU-s | peak NumPy | peak RSS growth | UCF101 encode |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in out:
        print(f"| {r['videos']} videos × {r['descriptors_per_video']:.0f} × {r['dim']}-d | {r['encoder']} "
              f"| {r['encoded_dim']:,} | {r['disk_bytes_per_video'] / 1e6:.2f} MB "
              f"| {r['disk_bytes_per_video'] * UCF101_VIDEOS / 1e9:.1f} GB | {r['read_videos_per_s']:.0f} "
              f"| {r['encode_store_videos_per_s']:.1f} | {r['encode_store_videos_per_cpu_s']:.1f} "
              f"| {r['tracemalloc_peak_mib']:.0f} MiB "
              f"| {r['rss_peak_mib']:.0f} MiB "
              f"| {UCF101_VIDEOS / r['encode_store_videos_per_cpu_s'] / 3600:.2f} CPU-h |")  # fmt: skip


if __name__ == "__main__":
    main()
