"""``p3d extract [KIND] ROOT -o STORE --model NAME``: video-level features of a collection (paper, Sec. 5).

Resumable (re-running skips the videos already in STORE), sharded under torchrun (each rank writes its own
parts; ``--merge`` or ``p3d merge-features`` joins them), bad videos listed with their reason.
"""

from __future__ import annotations

import argparse
import os

from p3d.commands._args import (
    add_data_arguments,
    add_model_arguments,
    describe_data,
    model_from_args,
    samples_from_args,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_data_arguments(p, positional=True, title="dataset (any format of the data pipeline)")
    p.add_argument(
        "-o", "--output", "--out", required=True, help="feature store directory (created; resumed if present)"
    )
    add_model_arguments(p)
    g = p.add_argument_group("input")
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
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: the spare cores; 0 = in-process)",
    )
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:$LOCAL_RANK if available)")
    g.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    g.add_argument("--flush-every", type=int, default=256, help="videos per written part (default 256)")
    g.add_argument("--merge", default=None, metavar="FILE", help="when all ranks are done, merge into one file")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from p3d.features import build_meta, extract_features
    from p3d.features_io import merge_features

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or (f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    model = model_from_args(args)
    changes = {}
    if args.clip_len is not None:
        changes["clip_len"] = args.clip_len
    if args.size is not None:
        changes["size"] = (args.size, args.size)
    if args.resize is not None:
        changes["resize"] = tuple(args.resize)
    if changes:
        model.input_spec = model.input_spec.replace(**changes)
    samples, desc = samples_from_args(args), describe_data(args)
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
