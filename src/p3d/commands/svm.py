"""``p3d svm FEATURES``: linear-SVM evaluation of video representations (paper, Sec. 5, Tables 4-7).

Multi-label stores (``p3d extract`` of ActivityNet untrimmed videos or Sports-1M lists) keep every label of a
video: the SVM trains on the first label, while mAP (ActivityNet: per-class AP over the videos ranked by score,
averaged over classes) and top-k (a hit when any true label is in the top k) use all of them.

Two streams: ``p3d svm RGB_STORE FLOW_STORE`` joins the stores by video id and concatenates their (each
L2-normalised) descriptors (:func:`p3d.representation.store.join_features`).
"""

from __future__ import annotations

import argparse

from p3d.commands._evalargs import add_protocol_arguments, protocol_kwargs, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = (
        "Multi-label videos (ActivityNet untrimmed, Sports-1M) keep all their labels in the store: the SVM trains "
        "on the first label, mAP and top-k count every true label (a hit when any is in the top k)."
    )
    p.add_argument(
        "features",
        nargs="+",
        help="feature store directory or merged .safetensors file written by `p3d extract`; two or more (e.g. the "
        "RGB and the flow stream): joined by video id, each L2-normalised, concatenated",
    )
    p.add_argument(
        "--layer",
        action="append",
        default=None,
        help="layer to evaluate (default: pool5 if present, else the first); once per store when joining",
    )
    add_protocol_arguments(p)
    p.add_argument("--pca", type=int, default=None, metavar="D", help="reduce features to D dimensions by PCA")
    p.add_argument("--topk", type=int, nargs="+", default=[1, 5], help="top-k accuracies to report (default 1 5)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    from p3d.commands._args import check_positive, check_positive_float
    from p3d.evaluation.protocol import build_protocol
    from p3d.evaluation.svm import SVMConfig, run_protocol
    from p3d.representation.store import join_features, read_features

    check_positive_float(C=args.C)
    check_positive(pca=args.pca, topk=min(args.topk))
    layers = args.layer or [None] * len(args.features)
    if len(layers) != len(args.features):
        raise ValueError(f"{len(layers)} --layer values for {len(args.features)} feature stores: give one per store")
    stores = [read_features(f) for f in args.features]
    fs = stores[0] if len(stores) == 1 else join_features(stores, layers)
    X = fs.layer(layers[0] if len(stores) == 1 else None)
    layer = layers[0] if len(stores) == 1 and layers[0] else ("pool5" if "pool5" in fs.video else fs.layers[0])
    proto = build_protocol(fs, **protocol_kwargs(args))
    cfg = SVMConfig(C=args.C, normalize=args.normalize, pca=args.pca, seed=args.seed)
    res = run_protocol(
        X, proto.labels, proto.splits, cfg, topk=args.topk, pool=proto.pool, multi_labels=proto.multi_labels
    )
    n_multi = 0 if proto.multi_labels is None else sum(len(labs) > 1 for labs in proto.multi_labels)
    model = fs.meta.get("model", "?")
    print(f"{fs.source}: {len(fs)} videos, model {model}, layer {layer} ({X.shape[1]}-d)")
    print(f"protocol: {proto.description}; C={args.C}, normalize={args.normalize}, pca={args.pca}")
    if n_multi:
        print(
            f"multi-label: {n_multi} video(s) with several labels; the SVM trains on the first label, "
            "mAP and top-k count every true label"
        )
    if len(res.per_split) <= 10:
        for name, m in zip(res.split_names, res.per_split, strict=True):
            print(f"  {name}: " + "  ".join(f"{k} {100 * v:.2f}%" for k, v in m.items()))
    if res.pooled is not None:
        print("pooled: " + "  ".join(f"{k} {100 * v:.2f}%" for k, v in res.pooled.items()))
    else:
        print("mean:   " + "  ".join(f"{k} {100 * v:.2f}% ± {100 * res.sem[k]:.2f}" for k, v in res.mean.items()))
    write_json(
        args.json,
        {
            "features": fs.source,
            "model": model,
            "layer": layer,
            "dim": int(X.shape[1]),
            "protocol": proto.description,
            "multi_label_videos": n_multi,
            "config": {"C": args.C, "normalize": args.normalize, "pca": args.pca, "seed": args.seed},
            "splits": dict(zip(res.split_names, res.per_split, strict=True)),
            "mean": res.mean,
            "sem": res.sem,
            "pooled": res.pooled,
        },
    )
    return 0
