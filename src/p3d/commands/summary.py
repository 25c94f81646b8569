"""``p3d summary MODEL|WEIGHTS``: parameters, size (MiB), FLOPs (and whether multiply-adds or 2× MACs), layer count."""

from __future__ import annotations

import argparse

from p3d.commands._args import add_source_argument, check_positive, model_from_source


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_argument(p)
    p.add_argument("--in-channels", type=int, default=None, help="3 RGB (default), 2 optical flow")
    p.add_argument("--pattern", default=None, help="P3D block pattern: ABC (default), A, B, C")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip (default: the model's, 16)")
    p.add_argument("--size", type=int, default=None, help="crop size (default: the model's, 160)")


def run(args: argparse.Namespace) -> int:
    from p3d.engine.memory import check_memory, estimate_inference
    from p3d.models import summarize

    check_positive(clip_len=args.clip_len, size=args.size, in_channels=args.in_channels)
    args.model_option += [f"{k}={v}" for k, v in (("in_channels", args.in_channels), ("pattern", args.pattern)) if v]
    model = model_from_source(args)
    spec = model.input_spec
    t = args.clip_len or spec.clip_len
    h, w = (args.size, args.size) if args.size else spec.size
    check_memory(
        estimate_inference(model, spec.replace(clip_len=t, size=(h, w)), batch_size=1, decoding=False),
        "counting FLOPs (one forward pass)",
    )
    print(summarize(model, model.pretrained_cfg.architecture, (1, spec.channels, t, h, w)))
    return 0
