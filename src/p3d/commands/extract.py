"""``p3d extract [KIND] ROOT -o STORE --model NAME``: video-level features of a collection (paper, Sec. 5).

Resumable (re-running skips the videos already in STORE), sharded under torchrun (each rank writes its own
parts; ``--merge`` or ``p3d merge-features`` joins them), bad videos listed with their reason (unreadable, or
non-finite features).  One writer per store: a second ``p3d extract`` into it is refused at once (exit 75, naming
the first one's pid and host).  SIGTERM/SIGINT/SIGHUP write the pending chunk and exit with ``128 + signal``; run
again to continue.  A failed write (full disk) exits 74 naming the part and what the store keeps.
"""

from __future__ import annotations

import argparse

from p3d.commands._args import (
    add_data_arguments,
    add_input_arguments,
    add_model_arguments,
    add_runtime_arguments,
    apply_input_arguments,
    check_positive,
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
    add_input_arguments(p)
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
    add_runtime_arguments(p, batch_size=32)
    g = p.add_argument_group("store")
    g.add_argument("--flush-every", type=int, default=256, help="videos per written part (default 256)")
    g.add_argument("--merge", default=None, metavar="FILE", help="when all ranks are done, merge into one file")


def run(args: argparse.Namespace) -> int:
    from p3d.engine.distributed import barrier, cleanup, init_distributed
    from p3d.fileio import check_writable
    from p3d.representation.extract import build_meta, extract_features
    from p3d.representation.store import merge_features

    check_positive(num_clips=args.num_clips, batch_size=args.batch_size, flush_every=args.flush_every)
    check_writable(args.output)
    info = init_distributed(args.device)
    try:
        model = model_from_args(args)
        apply_input_arguments(model, args)
        samples, desc = samples_from_args(args, whole_split=True), describe_data(args)
        meta = build_meta(
            model,
            args.layers,
            num_clips=args.num_clips,
            flip=args.flip,
            map_pooling=args.map_pooling,
            class_names=getattr(samples, "classes", None),
            clip_level=args.clip_level,
            dataset=desc,
        )
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
            device=info.device,
            amp=args.amp,
            rank=info.rank,
            world_size=info.world_size,
            flush_every=args.flush_every,
            progress=not args.no_progress,
        )
        who = f"rank {info.rank}/{info.world_size}: " if info.distributed else ""
        nonfinite = f" ({stats.nonfinite} with non-finite features)" if stats.nonfinite else ""
        print(
            f"{who}{stats.written} video(s) written, {stats.skipped} already done, {len(stats.bad)} bad{nonfinite}, "
            f"{stats.clips} clips in {stats.seconds:.1f}s ({stats.videos_per_second:.2f} videos/s, "
            f"{stats.clips_per_second:.1f} clips/s)"
        )
        for vid, reason in sorted(stats.bad.items()):
            print(f"  bad: {vid}: {reason}")
        if stats.stopped is not None:
            print(
                f"{who}stopped by signal {stats.stopped}: everything computed is in {args.output}; run the same "
                f"command again to continue"
            )
            return 128 + stats.stopped
        if args.merge:
            barrier()
            if info.is_main:
                print(f"merged {args.output} -> {merge_features(args.output, args.merge)}")
    finally:
        cleanup()
    return 0
