"""``p3d check-data [KIND] ROOT``: scan a dataset, report unreadable / too-short videos and statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p3d.commands._args import add_data_arguments, samples_from_args
from p3d.data.check import check_samples
from p3d.data.datasets import write_manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, positional=True, title="dataset")
    parser.add_argument("--min-frames", type=int, default=16, help="shorter videos/segments are flagged (16)")
    parser.add_argument("--full-decode", action="store_true", help="decode every frame (slow, finds all damage)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (1)")
    parser.add_argument("--write-clean", metavar="CSV", help="write the usable samples as a manifest")
    parser.add_argument("--json", metavar="FILE", help="write the full report as JSON")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_non_negative, check_positive
    from p3d.fileio import atomic_write_json, check_writable

    check_non_negative(min_frames=args.min_frames)
    check_positive(workers=args.workers)
    for out in (args.write_clean, args.json):  # before the scan, not after it
        if out:
            check_writable(Path(out).parent)
    samples = samples_from_args(args)
    report = check_samples(
        samples,
        min_frames=args.min_frames,
        workers=args.workers,
        full_decode=args.full_decode,
        progress=sys.stderr.isatty(),
    )
    summary = report.summary()
    print(
        f"{summary['samples']} samples, {summary['classes']} classes: "
        f"{summary['good']} usable, {summary['bad']} flagged"
    )
    if report.missing:
        print(f"{len(report.missing)} annotated videos not found on disk (e.g. {', '.join(report.missing[:3])})")
    for path, reason in sorted(report.bad.items()):
        print(f"  BAD {path}: {reason}")
    for key in ("duration_s", "frames"):
        st = summary[key]
        if st:
            print(
                f"{key:>11}: min {st['min']:.1f}  median {st['median']:.1f}  mean {st['mean']:.1f}  max {st['max']:.1f}"
            )
    print(f"resolutions: {summary['resolutions']}")
    print(f"        fps: {summary['fps']}")
    print(f"     codecs: {summary['codecs']}")
    counts = summary["samples_per_class"]
    if counts:
        lo, hi = min(counts, key=counts.get), max(counts, key=counts.get)
        print(f"per class: min {counts[lo]} ({lo}), max {counts[hi]} ({hi})")
    if args.write_clean:
        write_manifest([s for s in report.good], args.write_clean, classes=samples.classes)
        print(f"wrote {len(report.good)} usable samples to {args.write_clean}")
    if args.json:
        atomic_write_json(args.json, {"summary": summary, "bad": report.bad, "missing": report.missing})
    return 0 if not report.bad else 1
