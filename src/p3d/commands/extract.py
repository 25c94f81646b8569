"""``p3d extract INPUT -o STORE --model NAME``: video-level features of a collection (paper, Sec. 5).

Resumable (re-running skips the videos already in STORE), sharded under torchrun (each rank writes its own
parts; ``--merge`` or ``p3d merge-features`` joins them), bad videos listed with their reason.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        help="a folder of videos (class sub-folders give labels), a list file ('<path> [<label>]' lines), a "
        "manifest .csv, or a dataset root with --dataset",
    )
    p.add_argument("-o", "--output", required=True, help="feature store directory (created; resumed if present)")
    g = p.add_argument_group("dataset (any format of the data pipeline)")
    g.add_argument(
        "--dataset",
        default=None,
        choices=("ucf101", "kinetics", "activitynet", "sports1m", "folder", "manifest"),
        help="dataset kind of INPUT (default: folder / list / manifest by what INPUT is)",
    )
    g.add_argument("--annotations", default=None, help="annotation file or split folder of the dataset")
    g.add_argument("--split", default=None, help="dataset split (UCF101: 1..3; Kinetics: split column value)")
    g.add_argument("--subset", default=None, help="UCF101 train/test; ActivityNet training/validation/testing")
    g.add_argument("--classes", default=None, help="class names file (Kinetics, Sports-1M, manifest)")
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True, help="registry name, e.g. p3d199, resnet50_2d (see `p3d list-models`)")
    g.add_argument("--weights", default=None, help="weight file or pretrained tag (its preprocessing is used)")
    g.add_argument("--num-classes", type=int, default=None, help="classifier size (when --weights does not say)")
    g.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor option, YAML value (e.g. width=8, layers=[1,1,1,1]); repeatable",
    )
    g.add_argument("--clip-len", type=int, default=None, help="override the model's clip length")
    g.add_argument("--size", type=int, default=None, help="override the model's crop size (square)")
    g.add_argument("--resize", type=int, nargs=2, default=None, metavar=("H", "W"), help="override the resize")
    g = p.add_argument_group("features")
    g.add_argument(
        "--layers",
        nargs="+",
        default=["pool5"],
        help="layers to store: pool5 (default), res5c, res4_last, logits, prob (any name the model accepts)",
    )
    g.add_argument("--num-clips", type=int, default=20, help="test clips per video (default 20, the paper's)")
    g.add_argument("--flip", action="store_true", help="average every clip with its horizontal flip")
    g.add_argument(
        "--map-pooling", choices=("max", "avg"), default="max", help="reduce conv maps (res5c, res4_last) over T,H,W"
    )
    g.add_argument("--clip-level", action="store_true", help="also store every clip's descriptor")
    g = p.add_argument_group("run")
    g.add_argument("--batch-size", type=int, default=32, help="clips per forward pass, across videos (default 32)")
    g.add_argument("--workers", type=int, default=2, help="decoding worker processes (default 2; 0: in-process)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:$LOCAL_RANK if available)")
    g.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    g.add_argument("--flush-every", type=int, default=256, help="videos per written part (default 256)")
    g.add_argument("--merge", default=None, metavar="FILE", help="when all ranks are done, merge into one file")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _options(args: argparse.Namespace) -> dict:
    import yaml

    opts: dict = {}
    for kv in args.model_option:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-option expects KEY=VALUE, got {kv!r}")
        opts[key.strip().replace("-", "_")] = yaml.safe_load(value)
    if args.num_classes is not None:
        opts["num_classes"] = args.num_classes
    return opts


def load_samples(args: argparse.Namespace):
    from p3d.data import build_samples
    from p3d.features import samples_from_path

    if args.dataset is None:
        return samples_from_path(args.input), str(args.input)
    samples = build_samples(
        args.dataset,
        args.input,
        annotations=args.annotations,
        split=args.split,
        subset=args.subset,
        classes=args.classes,
    )
    desc = f"{args.dataset}:{args.input}" + "".join(
        f" {k}={v}" for k, v in (("split", args.split), ("subset", args.subset)) if v is not None
    )
    return samples, desc


def run(args: argparse.Namespace) -> int:
    import torch

    from p3d.features import build_meta, extract_features
    from p3d.features_io import merge_features
    from p3d.models import create_model

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    opts = _options(args)
    if args.weights is not None:
        from p3d.models.pretrained import pretrained_options

        opts = {**pretrained_options(args.weights, args.model), **opts}
    model = create_model(args.model, pretrained=args.weights, **opts)
    changes = {}
    if args.clip_len is not None:
        changes["clip_len"] = args.clip_len
    if args.size is not None:
        changes["size"] = (args.size, args.size)
    if args.resize is not None:
        changes["resize"] = tuple(args.resize)
    if changes:
        model.input_spec = model.input_spec.replace(**changes)
    samples, desc = load_samples(args)
    meta = build_meta(
        model,
        args.model,
        args.layers,
        num_clips=args.num_clips,
        flip=args.flip,
        map_pooling=args.map_pooling,
        class_names=getattr(samples, "classes", None),
        weights=args.weights if args.weights and os.path.isfile(args.weights) else None,
        clip_level=args.clip_level,
        dataset=desc,
    )
    if args.weights and not os.path.isfile(args.weights):
        meta["weights"] = {"tag": args.weights}
    stats = extract_features(
        model,
        samples,
        args.output,
        meta,
        layers=args.layers,
        num_clips=args.num_clips,
        flip=args.flip,
        batch_size=args.batch_size,
        map_pooling=args.map_pooling,
        clip_level=args.clip_level,
        num_workers=args.workers,
        device=device,
        amp=args.amp,
        rank=rank,
        world_size=world,
        flush_every=args.flush_every,
        progress=not args.no_progress,
    )
    who = f"rank {rank}/{world}: " if world > 1 else ""
    print(
        f"{who}{stats.written} video(s) written, {stats.skipped} already done, {len(stats.bad)} bad, "
        f"{stats.clips} clips in {stats.seconds:.1f}s ({stats.videos_per_second:.2f} videos/s, "
        f"{stats.clips_per_second:.1f} clips/s)"
    )
    for vid, reason in sorted(stats.bad.items()):
        print(f"  bad: {vid}: {reason}")
    if args.merge:
        if world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
            dist.barrier()
            if rank != 0:
                return 0
        out = merge_features(args.output, args.merge)
        print(f"merged {args.output} -> {out}")
    return 0
