"""``p3d similarity FEATURES --pairs PAIRS``: action similarity labeling, ASLAN protocol (paper, Table 6)."""

from __future__ import annotations

import argparse

DEFAULT_LAYERS = ("prob", "pool5", "res5c", "res4_last")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", help="feature store directory or merged .safetensors file written by `p3d extract`")
    p.add_argument("--pairs", required=True, help="pair list: '<video1> <video2> <same 1/0> [<fold>]' lines")
    p.add_argument(
        "--layers",
        nargs="+",
        default=None,
        help=f"representations (default: {' '.join(DEFAULT_LAYERS)} — those present; else all stored layers)",
    )
    p.add_argument("--folds", type=int, default=10, help="folds when the list has no fold column (default 10)")
    p.add_argument(
        "--shuffle-seed",
        type=int,
        default=None,
        help="assign folds over a seeded permutation instead of contiguous blocks (ASLAN View-2 order)",
    )
    p.add_argument("--C", type=float, default=1.0, help="LinearSVC regularisation (default 1)")
    p.add_argument(
        "--standardize",
        action="store_true",
        help="also scale pair-vector dimensions to unit variance on the training folds (not in the protocol)",
    )
    p.add_argument("--roc", default=None, metavar="PNG", help="write the ROC curve")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_non_negative, check_positive_float
    from p3d.commands._evalargs import write_json
    from p3d.evaluation.lists import read_pair_list, resolve_ids
    from p3d.evaluation.similarity import aslan_evaluate, fold_assignment
    from p3d.representation.store import read_features

    check_positive_float(C=args.C)
    check_non_negative(shuffle_seed=args.shuffle_seed)
    fs = read_features(args.features)
    if args.layers:
        layers = list(args.layers)
    else:
        layers = [n for n in DEFAULT_LAYERS if n in fs.video] or fs.layers
    reps = {n: fs.layer(n) for n in layers}
    pairs = read_pair_list(args.pairs)
    a = resolve_ids(fs.ids, pairs.first, f"the pair list {args.pairs}", fs.source)
    b = resolve_ids(fs.ids, pairs.second, f"the pair list {args.pairs}", fs.source)
    folds = fold_assignment(len(a), pairs.fold, args.folds, args.shuffle_seed)
    res = aslan_evaluate(reps, a, b, pairs.same, folds, C=args.C, standardize=args.standardize)
    print(
        f"{len(a)} pairs ({int(pairs.same.sum())} same), {len(res.fold_accuracy)} folds, "
        f"representations {layers} -> {12 * len(layers)}-d pair vectors"
    )
    acc, sem = 100 * res.accuracy, 100 * res.accuracy_sem
    print(f"accuracy {acc:.2f}% ± {sem:.2f} (standard error)  AUC {100 * res.auc:.2f}%")
    if args.roc:
        from p3d.evaluation.plots import plot_roc

        print(f"wrote {plot_roc(res.scores, res.same, args.roc, title='ASLAN ROC')}")
    write_json(
        args.json,
        {
            "features": fs.source,
            "pairs": args.pairs,
            "layers": layers,
            "fold_accuracy": res.fold_accuracy,
            "accuracy": res.accuracy,
            "accuracy_sem": res.accuracy_sem,
            "auc": res.auc,
            "fold_auc": res.fold_auc,
        },
    )
    return 0
