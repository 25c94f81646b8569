"""``p3d flow SRC DST``: TV-L1 optical flow of a dataset, one lossless ``<id>.flow.mkv`` per video (see
:mod:`p3d.data.flowjob` and :mod:`p3d.data.flowfile`).

SRC is a dataset folder (videos or ``img_00001.jpg`` frame folders, any layout; split lists and annotations are
copied along) or a list file / manifest.  Resumable: finished flow files are kept (``--overwrite`` to redo).
Unreadable or too-short videos are listed with the reason; exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import logging
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="dataset folder (videos or img_ frame folders) or a list file / manifest")
    p.add_argument("dst", help="output folder: <same relative path>/<video>.flow.mkv")
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="resize frames to H W before computing flow (e.g. 182 242, the training resize; default: as decoded)",
    )
    p.add_argument("--engine", choices=("tvl1", "opencv"), default="tvl1", help="tvl1: p3d's batched PyTorch TV-L1 "
                   "(CPU or GPU); opencv: OpenCV's DualTVL1 (pip install 'p3d[flow]')")  # fmt: skip
    p.add_argument("--bound", type=float, default=20.0, help="quantisation bound in pixels (default 20: TSN)")
    p.add_argument("--device", default=None, help="device of the tvl1 engine (cpu, cuda; default cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="frame pairs per TV-L1 call (default 1 CPU, 64 GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the TV-L1 iteration (tvl1 engine)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores/workers)")
    from p3d.commands._args import add_flow_arguments

    add_flow_arguments(p, on_the_fly=False)
    p.add_argument("--overwrite", action="store_true", help="recompute flow files that already exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_positive, tvl1_params
    from p3d.data.flowjob import flow_tree

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("p3d.data.flowjob").setLevel(logging.INFO)  # progress lines when there is no progress bar
    check_positive(workers=args.workers, threads=args.threads, batch_size=args.batch_size)
    if not (args.bound > 0 and args.bound < float("inf")):
        raise ValueError(f"--bound must be a positive number of pixels, got {args.bound}")
    if args.size is not None and min(args.size) < 1:
        raise ValueError(f"--size must be two positive integers, got {args.size}")
    report = flow_tree(
        args.src,
        args.dst,
        size=tuple(args.size) if args.size else None,
        engine=args.engine,
        bound=args.bound,
        params=tvl1_params(args.tvl1),
        batch_size=args.batch_size,
        device=args.device,
        compile=args.compile,
        workers=args.workers,
        threads=args.threads,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(
        f"wrote {report.written} flow files ({report.fields} fields), kept {report.skipped_existing} existing, "
        f"copied {report.copied} other files, {len(report.failed)} failed"
    )
    for path, reason in report.failed:
        print(f"  FAILED {path}: {reason}")
    return 0 if not report.failed else 1
