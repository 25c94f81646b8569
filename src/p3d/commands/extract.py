"""``p3d extract [KIND] ROOT -o STORE --model NAME``: video-level features of a collection (paper, Sec. 5).

Resumable (re-running skips the videos already in STORE), sharded under torchrun (each rank writes its own
parts; ``--merge`` or ``p3d merge-features`` joins them), bad videos listed with their reason (unreadable, or
non-finite features).  One writer per store: a second ``p3d extract`` into it is refused at once (exit 75, naming
the first one's pid and host).  SIGTERM/SIGINT/SIGHUP write the pending chunk and exit with ``128 + signal``; run
again to continue.  A failed write (full disk) exits 74 naming the part and what the store keeps.

``--dense [--stride 16]``: instead of one descriptor per video, the sequence of window descriptors along each video
with each window's start and end time (:mod:`p3d.representation.dense`; read back with
``read_features(STORE).sequence(video_id, layer)`` and ``.window_times(video_id)``).
``--local res5c [--local-pyramid 4,2,1] [--local-pca 256]``: also keep that layer's activations per position and
clip as local descriptors (float16) for ``p3d encode`` (FV, VLAD, FV-VAE; :mod:`p3d.representation.local`).
"""

from __future__ import annotations

import argparse

from p3d.commands._args import (
    add_data_arguments,
    add_flow_arguments,
    add_input_arguments,
    add_model_arguments,
    add_runtime_arguments,
    apply_input_arguments,
    check_non_negative,
    check_positive,
    describe_data,
    flow_from_rgb_from_args,
    model_from_args,
    subset_samples,
)
from p3d.commands._timeline import add_window_arguments, window_options


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
    g = p.add_argument_group("dense windows (long, untrimmed videos)")
    g.add_argument(
        "--dense",
        action="store_true",
        help="store the sequence of window descriptors along each video with their times (--num-clips and "
        "--clip-level do not apply); the video row is their mean",
    )
    add_window_arguments(g, dense_flag="--dense")
    g = p.add_argument_group("local descriptors (for p3d encode: FV, VLAD, FV-VAE)")
    g.add_argument(
        "--local",
        default=None,
        metavar="LAYER",
        help="also keep this conv layer's activations per position and clip as float16 local descriptors "
        "(res5c: 2048 x 5 x 5 at 160x160, 25 per clip)",
    )
    g.add_argument(
        "--local-pyramid",
        default=None,
        metavar="L1,L2",
        help="max-pool each map into LxL cells per level instead of keeping every position (e.g. 2,1: 4 + 1 "
        "cells per clip; 4,2,1 on res5c is FV-VAE's frame pyramid)",
    )
    g.add_argument("--local-pca", type=int, default=None, metavar="D", help="reduce local descriptors to D dims by PCA")
    g.add_argument(
        "--local-pca-videos",
        type=int,
        default=100,
        metavar="N",
        help="fit the PCA once on N videos evenly spread over the list (default 100), saved in the store",
    )
    add_flow_arguments(p)
    add_runtime_arguments(p, batch_size=32)
    g = p.add_argument_group("store")
    g.add_argument(
        "--flush-every",
        type=int,
        default=None,
        help="videos per written part (default 256; --dense: 64, and at most 8192 windows)",
    )
    g.add_argument("--merge", default=None, metavar="FILE", help="when all ranks are done, merge into one file")


def run(args: argparse.Namespace) -> int:
    from p3d.engine.distributed import barrier, cleanup, init_distributed
    from p3d.representation.dense import dense_meta, extract_dense_features
    from p3d.representation.extract import build_meta, extract_features, fit_local_pca
    from p3d.representation.store import merge_features

    check_positive(num_clips=args.num_clips, batch_size=args.batch_size, flush_every=args.flush_every)
    check_non_negative(workers=args.workers)
    if not args.dense and (args.stride is not None or args.last_window is not None):
        raise ValueError("--stride and --last-window set the windows of --dense extraction; add --dense")
    if args.dense and args.clip_level:
        raise ValueError("--clip-level does not apply to --dense (the windows are the clip rows)")
    stride, last = window_options(args) if args.dense else (None, None)
    local = _local_spec(args)
    if args.dense and local is not None:
        raise ValueError("--local keeps local descriptors of the test clips; it does not combine with --dense")
    info = init_distributed(args.device)
    ended = False
    try:
        model = model_from_args(args)
        apply_input_arguments(model, args)
        parts, desc = subset_samples(args, whole_split=True), describe_data(args)
        first, *rest = parts.values()
        samples = first.union(*rest)
        if info.is_main:  # what the store will hold: with a split and no --subset, every subset of it
            what = ", ".join(f"{name} {len(s)}" for name, s in parts.items() if name is not None)
            print(f"{desc}: {len(samples)} videos" + (f" ({what})" if what else "") + f" -> {args.output}")
        meta = build_meta(
            model,
            args.layers,
            num_clips=0 if args.dense else args.num_clips,
            flip=args.flip,
            map_pooling=args.map_pooling,
            class_names=getattr(samples, "classes", None),
            clip_level=args.clip_level or args.dense,
            dataset=desc,
            dense=dense_meta(model.input_spec, stride, last) if args.dense else None,
            local=local,
        )
        runtime = {"batch_size": args.batch_size, "num_workers": args.workers, "device": info.device, "amp": args.amp}
        if local is not None and local.pca_dim is not None and info.distributed:
            if info.is_main:  # fitted once, before any rank writes a part
                fit_local_pca(model, samples, args.output, local, num_clips=args.num_clips, flip=args.flip, **runtime)
            barrier()
        # the same run either way; what differs: clips per video, or windows along it
        extract, how = extract_features, {"num_clips": args.num_clips, "clip_level": args.clip_level, "local": local}
        how["flow_from_rgb"] = flow_from_rgb_from_args(args)
        if args.dense:
            if args.flow_from_rgb:
                raise ValueError("--dense windows read stored input: with a flow model, extract from `p3d flow` files")
            extract, how = extract_dense_features, {"stride": stride, "last": last}
        stats = extract(
            model,
            samples,
            args.output,
            meta,
            layers=args.layers,
            flip=args.flip,
            map_pooling=args.map_pooling,
            rank=info.rank,
            world_size=info.world_size,
            flush_every=args.flush_every or (64 if args.dense else 256),
            progress=not args.no_progress,
            **runtime,
            **how,
        )
        who = f"rank {info.rank}/{info.world_size}: " if info.distributed else ""
        unit = "windows" if args.dense else "clips"
        nonfinite = f" ({stats.nonfinite} with non-finite features)" if stats.nonfinite else ""
        print(
            f"{who}{stats.written} video(s) written, {stats.skipped} already done, {len(stats.bad)} bad{nonfinite}, "
            f"{stats.clips} {unit} in {stats.seconds:.1f}s ({stats.videos_per_second:.2f} videos/s, "
            f"{stats.clips_per_second:.1f} {unit}/s)"
        )
        if stats.loader is not None:
            print(f"{who}loader: {stats.loader.describe()}; main loop waited on it {stats.wait_seconds:.1f}s")
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
        ended = True
    finally:
        cleanup(sync=ended)
    return 0


def _local_spec(args: argparse.Namespace):
    """The :class:`~p3d.representation.local.LocalSpec` of ``--local*`` (None without ``--local``)."""
    from p3d.representation.local import LocalSpec, parse_pyramid

    if args.local is None:
        if args.local_pyramid is not None or args.local_pca is not None:
            raise ValueError(
                "--local-pyramid and --local-pca shape the local descriptors of --local LAYER; add --local"
            )
        return None
    check_positive(local_pca=args.local_pca, local_pca_videos=args.local_pca_videos)
    pyramid = parse_pyramid(args.local_pyramid) if args.local_pyramid is not None else ()
    return LocalSpec(args.local, pyramid=pyramid, pca_dim=args.local_pca, pca_videos=args.local_pca_videos)
