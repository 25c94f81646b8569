"""Arguments shared by ``p3d svm`` and ``p3d pca-study``: the protocol and the classifier."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("protocol (choose one)")
    g.add_argument(
        "--split",
        nargs=2,
        action="append",
        default=[],
        metavar=("TRAIN", "TEST"),
        help="train and test list files ('<video> [<label>]' lines, e.g. UCF101 trainlist01.txt testlist01.txt); "
        "repeat for several splits, the mean is reported",
    )
    g.add_argument("--kfold", type=int, default=None, metavar="K", help="stratified K-fold cross-validation")
    g.add_argument("--loo", action="store_true", help="leave-one-video-out (YUPENN, Dynamic Scene)")
    g.add_argument("--groups", default=None, metavar="FILE", help="leave-one-group-out, '<video> <group>' lines")
    g = p.add_argument_group("labels")
    g.add_argument("--labels", default=None, metavar="FILE", help="'<video> <label>' lines (override stored labels)")
    g.add_argument(
        "--classes", default=None, metavar="FILE", help="class index ('<index> <name>' lines, e.g. UCF101 classInd.txt)"
    )
    g = p.add_argument_group("classifier")
    g.add_argument("--C", type=float, default=1.0, help="LinearSVC regularisation (default 1)")
    g.add_argument(
        "--normalize", choices=("l2", "standard", "none"), default="l2", help="feature normalisation (default l2)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of fold shuffling, PCA and the SVM (default 0)")


def protocol_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "splits": [tuple(s) for s in args.split],
        "kfold": args.kfold,
        "loo": args.loo,
        "groups": args.groups,
        "labels": args.labels,
        "classes": args.classes,
        "seed": args.seed,
    }


def write_json(path: str | None, obj: Any) -> None:
    if path is None:
        return
    import os

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, p)
    print(f"wrote {p}")
