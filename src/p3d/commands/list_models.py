"""``p3d list-models``: the registry, with each model's expected input."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="glob filter, e.g. 'p3d*'")


def run(args: argparse.Namespace) -> int:
    from p3d.models import create_model, list_models, model_info

    for name in list_models(args.pattern):
        spec = create_model(name, width=8) if name != "c3d" else create_model(name, width=4, fc_width=8)
        s = spec.input_spec
        print(f"{name:14s} {s.clip_len}×{s.size[0]}×{s.size[1]} {s.channel_order}  {model_info(name).description}")
    return 0
