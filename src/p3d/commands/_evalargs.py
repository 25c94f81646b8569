"""Arguments shared by ``p3d svm`` and ``p3d pca-study``: the protocol and the classifier."""

from __future__ import annotations

import argparse
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
        "--classes",
        default=None,
        metavar="FILE",
        help="class index ('<index> <name>' lines, e.g. UCF101 classInd.txt; default: a classInd.txt beside the "
        "--split lists, else the stored class names)",
    )
    g = p.add_argument_group("classifier")
    g.add_argument("--C", type=float, default=1.0, help="LinearSVC regularisation (default 1)")
    g.add_argument(
        "--normalize", choices=("l2", "standard", "none"), default="l2", help="feature normalisation (default l2)"
    )
    g.add_argument("--seed", type=int, default=0, help="seed of fold shuffling, PCA and the SVM (default 0)")


def class_index_file(args: argparse.Namespace) -> str | None:
    """``--classes``, or UCF101's ``classInd.txt`` when it lies beside the first ``--split`` list: the labels of
    ``trainlist01.txt`` count from 1 as that index does, while the stored class names count from 0."""
    if args.classes is not None or not args.split:
        return args.classes
    beside = Path(args.split[0][0]).parent / "classInd.txt"
    return str(beside) if beside.is_file() else None


def protocol_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    from p3d.commands._args import check_non_negative

    check_non_negative(seed=args.seed)
    return {
        "splits": [tuple(s) for s in args.split],
        "kfold": args.kfold,
        "loo": args.loo,
        "groups": args.groups,
        "labels": args.labels,
        "classes": class_index_file(args),
        "seed": args.seed,
    }


def write_json(path: str | None, obj: Any) -> None:
    if path is None:
        return
    from p3d.fileio import atomic_write_json

    print(f"wrote {atomic_write_json(path, obj)}")
