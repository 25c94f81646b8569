"""Training throughput (clips/s) and peak memory of a P3D model, with and without data loading.

    python benchmarks/bench_train.py --model p3d63 --batch-size 2 --iterations 6 --warmup 2 --amp none bf16

For each precision, two measurements, each in a fresh subprocess (so its peak resident memory is its own):

* ``compute``: forward + backward + SGD step on one resident random batch (data loading excluded);
* ``train``: the real :class:`p3d.engine.Trainer` (paper protocol: SGD momentum 0.9, BN frozen except the
  first, 16×160×160 clips from frames resized to 182×242, random crop + flip) reading synthetic H.264 videos
  of 240×320 through the data pipeline (DataLoader workers decoding, seeded sampling), clips/s taken from the
  trainer's own per-iteration log after ``warmup`` iterations (data loading included).

When ``train`` reaches ``compute``'s clips/s, the loader keeps up.  Peak memory: the main process's maximum
resident set size (``getrusage``; torch has no CPU allocator statistics) and, on CUDA, ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cfg(args: argparse.Namespace, amp: str, data_root: str, out: str):
    from p3d.engine.config import TrainConfig, _merge

    cfg = TrainConfig()
    _merge(
        cfg,
        {
            "model": {"name": args.model, "freeze_bn": False},
            "data": {"root": data_root, "num_workers": args.workers},
            "optim": {"batch_size": args.batch_size, "accum_steps": 1, "iterations": args.iterations},
            "run": {
                "out_dir": out,
                "amp": amp,
                "device": args.device,
                "val_every": 0,
                "ckpt_every": 0,
                "log_every": 1,
                "progress": False,
                "tensorboard": False,
            },
        },
        "bench",
    )
    return cfg


def one(args: argparse.Namespace) -> dict:
    import torch

    from p3d.engine.trainer import Trainer, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = _cfg(args, args.amp, args.data, args.out)
    dev = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if args.one == "compute":
        model = build_model(cfg, num_classes=101).to(dev).to(memory_format=torch.channels_last_3d).train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        s = model.input_spec
        x = torch.randn(args.batch_size, 3, s.clip_len, *s.size, device=dev)
        y = torch.randint(0, 101, (args.batch_size,), device=dev)
        times = []
        for i in range(args.warmup + args.iterations):
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp == "bf16"):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        clips_s = args.batch_size * len(times) / sum(times)
    else:
        cfg.optim.iterations = args.warmup + args.iterations
        Trainer(cfg).fit()
        recs = [json.loads(x) for x in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
        rates = [r["clips_per_s"] for r in recs if "clips_per_s" in r and r["iteration"] > args.warmup]
        clips_s = len(rates) / sum(1.0 / r for r in rates)  # time-weighted mean
    out = {
        "mode": args.one,
        "amp": args.amp,
        "clips_per_s": clips_s,
        "peak_rss_mib": _peak_rss_mib(),
        "threads": torch.get_num_threads(),
        "device": str(dev),
    }
    if dev.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="p3d63")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--iterations", type=int, default=6, help="timed iterations")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16", "fp16"])
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--one", choices=["compute", "train"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        args.amp = args.amp[0]
        print("RESULT " + json.dumps(one(args)), flush=True)
        return

    from p3d.data import make_synthetic_dataset

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_synthetic_dataset(
            tmp + "/data",
            num_classes=4,
            videos_per_class=max(1, args.videos // 4) + 1,
            num_frames=48,
            size=(240, 320),
            test_fraction=0.2,
            seed=0,
        )
        print(f"synthetic videos written in {time.perf_counter() - t0:.1f} s", flush=True)
        for amp in args.amp:
            for mode in ("compute", "train"):
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    mode,
                    "--amp",
                    amp,
                    "--data",
                    tmp + "/data",
                    "--out",
                    f"{tmp}/run-{mode}-{amp}",
                    "--model",
                    args.model,
                    "--batch-size",
                    str(args.batch_size),
                    "--iterations",
                    str(args.iterations),
                    "--warmup",
                    str(args.warmup),
                    "--workers",
                    str(args.workers),
                    "--device",
                    args.device,
                ]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
                line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
                if r.returncode or not line:
                    sys.exit(f"{mode}/{amp} failed:\n{r.stdout}\n{r.stderr}")
                res = json.loads(line[0][7:])
                results.append(res)
                cuda = res.get("cuda_max_allocated_mib")
                extra = f"   CUDA max allocated {cuda:.0f} MiB" if cuda is not None else ""
                print(
                    f"{mode:8s} {amp:5s} {res['clips_per_s']:7.2f} clips/s   peak RSS {res['peak_rss_mib']:7.0f} MiB"
                    + extra,
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
