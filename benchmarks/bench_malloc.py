"""glibc malloc tuned in-process (p3d.malloc) against untuned glibc and the old GLIBC_TUNABLES re-exec, side by side.

    python benchmarks/bench_malloc.py --rounds 3

Every measurement runs in a fresh child process started as a library user starts one: ``python script.py``,
nothing set in the environment except, per variant,

* ``untuned``: ``P3D_NO_MALLOC_TUNE=1`` (what ``import p3d`` gave before issue 16: glibc's defaults);
* ``in-process``: nothing (``p3d.create_model`` imports ``p3d.models``, which calls ``p3d.malloc.tune()``);
* ``env``: ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296`` set
  before Python starts (what the ``p3d`` command used to re-execute itself with).

Workloads (the variants alternate within each round, the order rotating between rounds):

* ``forward``: ``p3d.create_model("p3d63")`` in eval mode, a resident batch of 8 clips 16×160×160, inference mode;
* ``train``: forward + backward + SGD step (momentum 0.9) of P3D-63 (channels-last) on a resident batch;
* ``extract``: :func:`p3d.features.extract_features` (pool5, 4 clips per video, batch 8, 1 decoding worker) on
  synthetic H.264 videos, after a warm-up on two other videos.

Each child reports clips/s (median over the repetitions), minor page faults per repetition of the main process,
its peak RSS, the RSS it keeps after the work and after :func:`p3d.malloc.release_memory`.  Finally the start-up
of ``python -m p3d --help``: as now (one process) and as the removed re-exec did it (import ``p3d.cli``, then
``execve`` the same command with the tunables set), alternating.

``--sweep`` instead runs forward and train once under each raw ``mallopt`` setting of ``SWEEP`` (p3d's tuning
off): which thresholds remove the page faults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_seconds  # noqa: E402

OLD_TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=4294967296"
VARIANTS = {
    "untuned": {"P3D_NO_MALLOC_TUNE": "1"},
    "in-process": {},
    "env": {"GLIBC_TUNABLES": OLD_TUNABLES},
}
WORKLOADS = ("forward", "train", "extract")
MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_MMAP_THRESHOLD": -3, "M_MMAP_MAX": -4}  # glibc malloc.h
MiB = 2**20
# --sweep: raw mallopt settings (p3d's own tuning off), to find which ones remove the page faults
SWEEP = [
    {},
    {"M_MMAP_THRESHOLD": 2**31 - 1},
    {"M_MMAP_THRESHOLD": 32 * MiB, "M_TRIM_THRESHOLD": 2**31 - 1},
    {"M_MMAP_THRESHOLD": 2**31 - 1, "M_TRIM_THRESHOLD": 64 * MiB},
    {"M_MMAP_THRESHOLD": 2**31 - 1, "M_TRIM_THRESHOLD": 256 * MiB},
    {"M_MMAP_THRESHOLD": 1024 * MiB, "M_TRIM_THRESHOLD": 1024 * MiB},
    {"M_MMAP_THRESHOLD": 2**31 - 1, "M_TRIM_THRESHOLD": 2**31 - 1},
    {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": 2**31 - 1},
]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that tunes or replaces malloc, plus ``extra``."""
    drop = ("GLIBC_TUNABLES", "LD_PRELOAD", "P3D_NO_MALLOC_TUNE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MALLOC_")}
    return {**env, **extra}


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(step, reps: int, clips: int) -> tuple[list[float], list[float], list[int]]:
    """clips/s, CPU seconds per clip and page faults of ``reps`` calls of ``step`` (after two warm-up calls: the
    heap reaches its size in the second)."""
    step()
    step()
    rates, cpu, faults = [], [], []
    for _ in range(reps):
        f0, c0, t0 = _faults(), cpu_seconds(), time.perf_counter()
        step()
        rates.append(clips / (time.perf_counter() - t0))
        cpu.append((cpu_seconds() - c0) / clips)
        faults.append(_faults() - f0)
    return rates, cpu, faults


def child(args: argparse.Namespace) -> dict:
    if args.mallopt:
        import ctypes

        libc = ctypes.CDLL(None)
        for name, value in json.loads(args.mallopt).items():
            if libc.mallopt(MALLOPT[name], value) != 1:
                raise SystemExit(f"mallopt({name}, {value}) rejected")
    import torch

    import p3d
    from p3d import malloc

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child == "forward":
        model = p3d.create_model("p3d63").eval()
        x = torch.randn(args.batch_size, 3, 16, 160, 160)

        def step() -> None:
            with torch.inference_mode():
                model(x)

        rates, cpu, faults = _timed(step, args.reps, args.batch_size)
    elif args.child == "train":
        model = p3d.create_model("p3d63", num_classes=101).to(memory_format=torch.channels_last_3d).train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        x = torch.randn(args.train_batch_size, 3, 16, 160, 160)
        y = torch.randint(0, 101, (args.train_batch_size,))

        def step() -> None:
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        rates, cpu, faults = _timed(step, args.reps, args.train_batch_size)
    else:
        from p3d.features import build_meta, extract_features

        from p3d.data import build_samples

        model = p3d.create_model("p3d63", num_classes=4).eval()
        samples = build_samples("ucf101", args.data, split=1, subset="train")
        meta = build_meta(model, "p3d63", ["pool5"], num_clips=4, flip=False, map_pooling="max",
                          class_names=samples.classes)  # fmt: skip
        kw = {"layers": ["pool5"], "num_clips": 4, "batch_size": 8, "num_workers": 1, "progress": False}
        with tempfile.TemporaryDirectory() as tmp:
            extract_features(model, samples.samples[:2], f"{tmp}/warmup", meta, **kw)
            f0, c0 = _faults(), cpu_seconds(children=True)
            stats = extract_features(model, samples.samples[2:], f"{tmp}/feats", meta, **kw)
            rates, faults = [stats.clips_per_second], [_faults() - f0]
            cpu = [(cpu_seconds(children=True) - c0) / stats.clips]  # main process and the finished decoding worker
    kept = _rss_mib()  # extract_features already released at its end
    malloc.release_memory()
    return {
        "workload": args.child,
        "status": malloc.status().reason,
        "clips_per_s": statistics.median(rates),
        "cpu_s_per_clip": statistics.median(cpu),
        "faults": statistics.median(faults),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_kept_mib": kept,
        "rss_released_mib": _rss_mib(),
        "threads": torch.get_num_threads(),
    }


def _startup(reps: int) -> dict[str, float]:
    """Median wall seconds of ``python -m p3d --help``: now, and as the removed re-exec ran it."""
    now = [sys.executable, "-m", "p3d", "--help"]
    reexec = (
        "import os, sys, p3d.cli; "
        f"os.execve(sys.executable, {now!r}, {{**os.environ, 'GLIBC_TUNABLES': {OLD_TUNABLES!r}}})"
    )
    cmds = {"one process (now)": now, "re-exec (removed)": [sys.executable, "-c", reexec]}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(reps + 1):
        for name, cmd in cmds.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, env=_clean_env(), check=True, capture_output=True)
            if i:  # the first round warms the file cache
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _run_child(args: argparse.Namespace, workload: str, env: dict[str, str], *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--child", workload, "--reps", str(args.reps), *extra]
    cmd += ["--batch-size", str(args.batch_size), "--train-batch-size", str(args.train_batch_size)]
    cmd += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(cmd, env=_clean_env(**env), capture_output=True, text=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if out.returncode or not line:
        sys.exit(f"{workload} {env} {extra} failed:\n{out.stdout}\n{out.stderr}")
    return json.loads(line[0][7:])


def sweep(args: argparse.Namespace) -> None:
    """Page faults per repetition and CPU s per clip of forward and train under each raw mallopt setting."""
    print("| mallopt (p3d's tuning off) | forward faults | forward CPU s/clip | train faults | train CPU s/clip |")
    print("|---|---:|---:|---:|---:|")
    for setting in SWEEP:
        res = {w: _run_child(args, w, {"P3D_NO_MALLOC_TUNE": "1"}, "--mallopt", json.dumps(setting))
               for w in ("forward", "train")}  # fmt: skip
        name = ", ".join(f"{k}={v}" for k, v in setting.items()) or "glibc defaults"
        f, t = res["forward"], res["train"]
        print(f"| {name} | {f['faults']:.0f} | {f['cpu_s_per_clip']:.3f} | {t['faults']:.0f} | "
              f"{t['cpu_s_per_clip']:.3f} |", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3, help="timed repetitions per child (forward, train)")
    p.add_argument("--batch-size", type=int, default=8, help="forward batch")
    p.add_argument("--train-batch-size", type=int, default=4)
    p.add_argument("--videos", type=int, default=10, help="extraction videos (2 of them for the warm-up)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--threads", type=int, default=None, help="torch threads in the children (default: torch's)")
    p.add_argument("--startup-reps", type=int, default=10)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--sweep", action="store_true", help="forward and train under each of SWEEP's mallopt settings")
    p.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    p.add_argument("--mallopt", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)), flush=True)
        return
    if args.sweep:
        sweep(args)
        return

    cpu = next((x.split(":", 1)[1].strip() for x in open("/proc/cpuinfo") if x.startswith("model name")), "?")
    print(f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, glibc {platform.libc_ver()[1]}")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "extract" in args.workloads:
            from p3d.data import make_synthetic_dataset

            make_synthetic_dataset(tmp, num_classes=4, videos_per_class=-(-args.videos // 4), num_frames=48,
                                   size=(182, 242), test_fraction=0.0)  # fmt: skip
        names = list(VARIANTS)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for workload in args.workloads:
                for variant in order:
                    res = _run_child(args, workload, VARIANTS[variant], "--data", tmp)
                    res = {"round": r, "variant": variant, **res}
                    results.append(res)
                    print(f"round {r} {workload:8s} {variant:10s} {res['clips_per_s']:6.2f} clips/s "
                          f"{res['cpu_s_per_clip']:6.3f} CPU s/clip "
                          f"{res['faults']:8.0f} faults  peak {res['peak_rss_mib']:5.0f} MiB  kept "
                          f"{res['rss_kept_mib']:5.0f}  released {res['rss_released_mib']:5.0f}  ({res['status']})",
                          flush=True)  # fmt: skip

    keys = ("clips_per_s", "cpu_s_per_clip", "faults", "peak_rss_mib", "rss_kept_mib", "rss_released_mib")
    print("\nmedians over rounds (clips/s, CPU s per clip, page faults per repetition, MiB)")
    print("| workload | variant | clips/s | vs untuned | CPU s/clip | vs untuned | page faults | peak RSS | RSS kept "
          "| after release |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for workload in args.workloads:
        med = {}
        for variant in VARIANTS:
            rows = [x for x in results if x["workload"] == workload and x["variant"] == variant]
            med[variant] = {k: statistics.median(x[k] for x in rows) for k in keys}
        base = med["untuned"]
        for variant, m in med.items():
            cells = [workload, variant, f"{m['clips_per_s']:.2f}", f"{m['clips_per_s'] / base['clips_per_s']:.2f}×",
                     f"{m['cpu_s_per_clip']:.3f}", f"{base['cpu_s_per_clip'] / m['cpu_s_per_clip']:.2f}×",
                     *(f"{m[k]:.0f}" for k in keys[2:])]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    startup = _startup(args.startup_reps) if args.startup_reps else {}
    for name, s in startup.items():
        print(f"python -m p3d --help, {name}: {s * 1000:.0f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": cpu, "runs": results, "startup_s": startup}, indent=1) + "\n")


if __name__ == "__main__":
    main()
