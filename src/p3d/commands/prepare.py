"""``p3d prepare``: re-encode a dataset folder for fast clip loading (see p3d.data.prepare)."""

from __future__ import annotations

import argparse
import sys

from p3d.data.prepare import prepare_tree


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 182x242, got {text!r}") from None
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="dataset folder (videos in any layout, plus split/annotation files)")
    parser.add_argument("dst", help="output folder (same layout, videos as .mp4)")
    parser.add_argument("--size", type=_size, default=(182, 242), help="output HxW (182x242: the paper's resize)")
    parser.add_argument("--gop", type=int, default=8, help="frames between key frames (8)")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality, lower is better (18)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (1)")
    parser.add_argument("--overwrite", action="store_true", help="redo videos already in dst")


def run(args: argparse.Namespace) -> int:
    import torch

    from p3d.commands._args import check_positive
    from p3d.engine.memory import MemoryEstimate, check_memory
    from p3d.fileio import check_writable

    check_positive(gop=args.gop, workers=args.workers)
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be in 0..51 (x264's quality scale), got {args.crf}")
    h, w = args.size
    frames = {"frames being re-encoded": args.workers * 4 * h * w * 3}  # decoded, resized, encoder input and output
    check_memory(MemoryEstimate(torch.device("cpu"), host=frames), "re-encoding", "use a smaller --size or --workers")
    check_writable(args.dst)
    report = prepare_tree(
        args.src,
        args.dst,
        size=args.size,
        gop=args.gop,
        crf=args.crf,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
    )
    print(
        f"converted {report.converted} videos, kept {report.skipped_existing} existing, copied {report.copied} "
        f"other files, {len(report.failed)} failed"
    )
    for path, reason in report.failed:
        print(f"  FAILED {path}: {reason}")
    return 0 if not report.failed else 1
