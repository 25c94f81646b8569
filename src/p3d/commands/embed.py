"""``p3d embed FEATURES -o tsne.png``: t-SNE of video-level features coloured by class (paper, Fig. 6)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("features", help="feature store directory or merged .safetensors file written by `p3d extract`")
    p.add_argument("-o", "--output", required=True, help="PNG plot to write")
    p.add_argument("--layer", default=None, help="layer to embed (default: pool5 if present, else the first)")
    p.add_argument("--labels", default=None, metavar="FILE", help="'<video> <label>' lines (override stored labels)")
    p.add_argument("--classes", default=None, metavar="FILE", help="class index for names in the legend")
    p.add_argument("--max-videos", type=int, default=2000, help="random subset if there are more (default 2000)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (lowered for small sets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None, help="plot title (default: model and layer)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from p3d.commands._args import check_non_negative, check_positive, check_positive_float
    from p3d.evaluation.lists import read_class_index, read_label_file, resolve_ids
    from p3d.evaluation.plots import plot_embedding, tsne_embedding
    from p3d.representation.store import read_features

    check_positive(max_videos=args.max_videos)
    check_positive_float(perplexity=args.perplexity)
    check_non_negative(seed=args.seed)
    fs = read_features(args.features)
    X = fs.layer(args.layer)
    y = fs.labels.copy()
    names = fs.class_names
    if args.classes:
        names = list(read_class_index(args.classes).names)
    if args.labels:
        index = read_class_index(args.classes) if args.classes else None
        table = read_label_file(args.labels)
        rows = resolve_ids(fs.ids, list(table), f"the label file {args.labels}", fs.source)
        for r, (vid, tok) in zip(rows, table.items(), strict=True):
            y[r] = index.index(tok, f"{args.labels}: {vid}") if index else int(tok)
    rows = np.arange(len(fs))
    if len(rows) > args.max_videos:
        rows = np.sort(np.random.default_rng(args.seed).choice(rows, args.max_videos, replace=False))
    Y = tsne_embedding(X[rows], seed=args.seed, perplexity=args.perplexity)
    layer = args.layer or ("pool5" if "pool5" in fs.video else fs.layers[0])
    title = args.title if args.title is not None else f"{fs.meta.get('model', '')} {layer}".strip()
    print(f"wrote {plot_embedding(Y, y[rows], args.output, names, title)} ({len(rows)} videos)")
    return 0
