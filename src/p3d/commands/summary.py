"""``p3d summary MODEL``: parameters, size, FLOPs (and whether multiply-adds or 2× MACs), layer count."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="registry name, e.g. p3d199 (see `p3d list-models`)")
    p.add_argument("--num-classes", type=int, default=None, help="classifier size (default: the registry's, 400)")
    p.add_argument("--in-channels", type=int, default=None, help="3 RGB (default), 2 optical flow")
    p.add_argument("--pattern", default=None, help="P3D block pattern: ABC (default), A, B, C")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: the model's, 16)")
    p.add_argument("--size", type=int, default=None, help="crop size (default: the model's, 160)")


def run(args: argparse.Namespace) -> int:
    from p3d.models import create_model, summarize

    options = {
        k: v
        for k, v in (
            ("num_classes", args.num_classes),
            ("in_channels", args.in_channels),
            ("pattern", args.pattern),
        )
        if v is not None
    }
    model = create_model(args.model, **options)
    spec = model.input_spec
    t = args.clip_len or spec.clip_len
    h, w = (args.size, args.size) if args.size else spec.size
    print(summarize(model, args.model, (1, spec.channels, t, h, w)))
    return 0
