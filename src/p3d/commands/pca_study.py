"""``p3d pca-study FEATURES...``: SVM accuracy vs PCA dimension, one curve per feature file (paper, Fig. 7)."""

from __future__ import annotations

import argparse

from p3d.commands._evalargs import add_protocol_arguments, protocol_kwargs, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "features",
        nargs="+",
        help="feature files/stores, optionally NAME=PATH to name the curve (e.g. P3D=feats/p3d R2D=feats/r50)",
    )
    p.add_argument("--layer", default=None, help="layer to evaluate (default: pool5 if present, else the first)")
    p.add_argument(
        "--dims", type=int, nargs="+", default=[500, 200, 100, 50, 10], help="PCA dimensions (default 500 ... 10)"
    )
    add_protocol_arguments(p)
    p.add_argument("-o", "--output", required=True, help="PNG plot to write")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the curves as JSON")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_positive_float
    from p3d.evaluation.plots import plot_pca_study
    from p3d.evaluation.protocol import build_protocol
    from p3d.evaluation.svm import SVMConfig, pca_dimension_study
    from p3d.representation.store import read_features

    if any(d < 1 for d in args.dims):
        raise ValueError(f"--dims must be positive, got {args.dims}")
    check_positive_float(C=args.C)
    curves: dict[str, list[tuple[int, float]]] = {}
    for spec in args.features:
        name, _, path = spec.rpartition("=")
        fs = read_features(path)
        name = name or fs.meta.get("model") or path
        if name in curves:
            raise ValueError(f"two feature sets are named {name!r}; name them with NAME=PATH")
        proto = build_protocol(fs, **protocol_kwargs(args))
        cfg = SVMConfig(C=args.C, normalize=args.normalize, seed=args.seed)
        X = fs.layer(args.layer)
        curves[name] = pca_dimension_study(X, proto.labels, proto.splits, args.dims, cfg, pool=proto.pool)
        print(f"{name}: " + "  ".join(f"{d}-d {100 * a:.2f}%" for d, a in curves[name]))
    print(f"wrote {plot_pca_study(curves, args.output, metric='top-1 accuracy')}")
    write_json(args.json, {k: [{"dim": d, "top1": a} for d, a in v] for k, v in curves.items()})
    return 0
