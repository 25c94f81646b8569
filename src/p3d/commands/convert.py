"""``p3d convert SOURCE``: the authors' Caffe models or the PyTorch port's checkpoints → p3d ``.safetensors``.

``p3d convert model.caffemodel --prototxt deploy.prototxt --tag p3d199.kinetics400_rgb`` writes the converted
weights (with their preprocessing and provenance embedded, plus a sidecar JSON with the SHA-256) to the
pretrained directory, where ``create_model(..., pretrained=TAG)`` finds them; ``-o FILE`` writes elsewhere.
``p3d convert p3d_rgb_199.checkpoint.pth.tar`` reads the port's checkpoint (safely: ``weights_only=True``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a .caffemodel (with --prototxt) or the port's .pth.tar/.pth checkpoint")
    p.add_argument("--prototxt", help="the matching deploy prototxt (Caffe sources)")
    p.add_argument(
        "--from",
        dest="kind",
        choices=("auto", "caffe", "port"),
        default="auto",
        help="source format (default: by file suffix: .caffemodel → caffe, else port)",
    )
    p.add_argument("-o", "--output", help="output .safetensors (default: PRETRAINED_DIR/TAG.safetensors)")
    p.add_argument("--tag", help="pretrained tag this file provides, e.g. p3d199.kinetics400_rgb (see --list-tags)")
    p.add_argument("--pattern", default="ABC", help="port checkpoints: P3D block cycle (not in the weights; ABC)")
    p.add_argument("--dropout", type=float, default=None, help="port checkpoints: pool5 dropout (default 0.5)")
    p.add_argument("--verbose", action="store_true", help="print every loaded key")


def run(args: argparse.Namespace) -> int:
    import time

    from p3d.convert.caffe import convert_caffe
    from p3d.convert.port import convert_port
    from p3d.models.pretrained import get_pretrained_cfg, pretrained_dir, save_pretrained

    src = Path(args.source)
    if src.suffix == ".prototxt":  # the description alone: the weights are in the .caffemodel beside it
        raise ValueError(
            f"{src}: a prototxt describes the network but holds no weights; give the .caffemodel and this file as "
            f"--prototxt: p3d convert MODEL.caffemodel --prototxt {src} -o OUT.safetensors"
        )
    kind = args.kind
    if kind == "auto":
        kind = "caffe" if src.suffix == ".caffemodel" else "port"
    tag_cfg = get_pretrained_cfg(args.tag) if args.tag else None
    if args.output:
        out = Path(args.output)
    elif args.tag:
        out = pretrained_dir() / f"{args.tag}.safetensors"
    else:
        raise ValueError("give --output FILE.safetensors or --tag TAG (written to the pretrained directory)")
    t0 = time.perf_counter()
    if kind == "caffe":
        if not args.prototxt:
            raise ValueError(f"{src}: a Caffe model needs its deploy prototxt (--prototxt)")
        model, report, _ = convert_caffe(src, args.prototxt)
    else:
        dropout = args.dropout
        if dropout is None:
            dropout = float(tag_cfg.options["dropout"]) if tag_cfg else 0.5
        model, report = convert_port(src, pattern=args.pattern, dropout=dropout)
    seconds = time.perf_counter() - t0
    if tag_cfg is not None:
        mine = model.pretrained_cfg.options
        diff = {k: (mine.get(k), v) for k, v in tag_cfg.options.items() if mine.get(k) != v and k != "dropout"}
        if diff or model.pretrained_cfg.architecture != tag_cfg.architecture:
            raise ValueError(
                f"{src}: converts to {model.pretrained_cfg.architecture} with options that differ from tag "
                f"{args.tag!r}: " + ", ".join(f"{k} file {a!r} vs tag {b!r}" for k, (a, b) in diff.items())
            )
    if tag_cfg is not None:  # the release's description and source travel with the converted file
        model.pretrained_cfg = model.pretrained_cfg.replace(description=tag_cfg.description, source=tag_cfg.source)
    cfg = save_pretrained(model, out, tag=args.tag)
    print(report)
    if args.verbose:
        print("\n".join(f"  loaded: {k}" for k in report.loaded))
    spec = model.input_spec
    print(
        f"converted {src} in {seconds:.1f} s → {out} ({out.stat().st_size / 2**20:.1f} MiB, sha256 {cfg.sha256})\n"
        f"architecture {cfg.architecture} {dict(cfg.options)}\n"
        f"preprocessing: {spec.channel_order}, scale {spec.scale}, mean {list(spec.mean)}, std {list(spec.std)}, "
        f"{spec.clip_len}×{spec.size[0]}×{spec.size[1]}"
    )
    return 0
