"""``p3d merge-features STORE -o merged.safetensors``: join the parts of all ranks into one feature file."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", help="feature store directory written by `p3d extract` (any number of ranks)")
    p.add_argument("-o", "--output", required=True, help=".safetensors file to write (atomically)")


def run(args: argparse.Namespace) -> int:
    from p3d.representation.store import merge_features, read_features

    out = merge_features(args.store, args.output)
    fs = read_features(out)
    print(f"wrote {out}: {len(fs)} videos, layers {fs.layers}, {len(fs.bad)} bad video(s) listed")
    return 0
