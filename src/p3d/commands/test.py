"""``p3d test WEIGHTS``: video-level testing as the paper (Sec. 4.1): 20 clips per video, centre crop, averaged.

WEIGHTS is anything the weights resolver reads (a ``p3d train`` run folder or checkpoint, a tag, a converted or
exported ``.safetensors``).  Reports clip hit@1, video hit@1 and hit@k (multi-label aware) and per-class accuracy;
writes ``metrics.json``, ``predictions.jsonl`` and ``confusion.png`` to ``--out``.  The dataset defaults to the
validation/test list of the run's training configuration.  Runs sharded under torchrun (results gathered by video
id).  Unreadable videos are listed with their reasons.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from p3d.commands._args import (
    add_data_arguments,
    add_model_arguments,
    add_runtime_arguments,
    check_non_negative,
    check_positive,
    model_from_args,
    samples_from_args,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="a p3d train run folder or checkpoint, a pretrained tag or a .safetensors file")
    add_model_arguments(p, weights_flag=False)
    add_data_arguments(
        p,
        title="data (default: the run's validation list; with --data-root the kind defaults to ucf101)",
        split_help="UCF101 split 1..3 (default 1) / Kinetics split value (default val)",
        subset_help="UCF101 train/test (default test), ActivityNet subset (default validation)",
    )
    g = p.add_argument_group("protocol")
    g.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    g.add_argument("--topk", type=int, default=5, help="k of video hit@k (default 5)")
    g.add_argument("--max-videos", type=int, default=None, help="test only the first N videos")
    add_runtime_arguments(p, batch_size=8)
    p.add_argument("--out", default=None, help="output folder (default: <run>/test, or ./p3d-test)")


def _run_dir(weights: str) -> Path | None:
    """The ``p3d train`` run folder the weights belong to, if they do."""
    from p3d.models import resolve_weights

    w = resolve_weights(weights)
    if w.kind == "run":
        return Path(weights)
    if w.kind == "checkpoint" and w.path.parent.name == "checkpoints":
        return w.path.parent.parent
    return None


def _samples(args: argparse.Namespace, run: Path | None):
    from p3d.engine.config import TrainConfig
    from p3d.engine.trainer import build_samples_for

    if args.data_root is not None:
        return samples_from_args(args, default_kind="ucf101", for_test=True)
    if run is None or not (run / "config.yaml").is_file():
        raise ValueError(f"{args.weights}: not from a p3d train run, so no validation list is known; give --data-root")
    import yaml

    cfg = TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()), str(run / "config.yaml"))
    samples = build_samples_for(cfg, train=False)
    if samples is None:
        raise ValueError(f"{run}: the run's configuration has no validation list; give --data-root")
    return samples


def run(args: argparse.Namespace) -> int:
    from p3d.engine.distributed import cleanup, init_distributed
    from p3d.engine.evaluate import evaluate_videos, write_predictions
    from p3d.evaluation.plots import plot_confusion
    from p3d.fileio import atomic_write_json, check_writable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_positive(clips=args.clips, batch_size=args.batch_size, topk=args.topk, max_videos=args.max_videos)
    check_non_negative(workers=args.workers)
    run_dir = _run_dir(args.weights)
    out = Path(args.out) if args.out else (run_dir / "test" if run_dir is not None else Path("p3d-test"))
    info = init_distributed(args.device)
    try:
        model = model_from_args(args, args.weights)
        classes = model.pretrained_cfg.class_names
        samples = _samples(args, run_dir)
        if classes is not None and list(samples.classes) != list(classes):
            raise ValueError(
                f"{args.weights}: trained on {len(classes)} classes {list(classes)[:5]}..., the test list has "
                f"{len(samples.classes)} {list(samples.classes)[:5]}...; class lists must match"
            )
        if model.num_classes != len(samples.classes):
            raise ValueError(
                f"{args.weights}: a {model.num_classes}-way classifier, the test list has {len(samples.classes)} "
                f"classes"
            )
        if info.is_main:
            check_writable(out)
        result = evaluate_videos(
            model,
            samples,
            num_clips=args.clips,
            clip_batch=args.batch_size,
            device=info.device,
            amp=args.amp,
            num_workers=args.workers,
            rank=info.rank,
            world_size=info.world_size,
            max_videos=args.max_videos,
            progress=info.is_main and not args.no_progress,
        )
    finally:
        cleanup()
    if not info.is_main:
        return 0
    m = result.metrics(topk=args.topk)
    m["weights"] = str(args.weights)
    m["classes"] = list(samples.classes)
    m["failed"] = result.failed
    atomic_write_json(out / "metrics.json", m)
    write_predictions(result, out / "predictions.jsonl", topk=args.topk)
    plot_confusion(
        m["confusion"],
        list(samples.classes),
        out / "confusion.png",
        title=f"{Path(args.weights).name}: video hit@1 {m['video_hit@1']:.3f}",
    )
    print(
        f"{result.num_videos} videos, {result.num_clips} clips ({len(result.failed)} unreadable), "
        f"{m['clips_per_s']:.1f} clips/s"
    )
    for path, reason in result.failed.items():
        print(f"  unreadable: {path}: {reason}")
    print(f"clip hit@1   {m['clip_hit@1']:.4f}")
    print(f"video hit@1  {m['video_hit@1']:.4f}")
    print(f"video hit@{args.topk}  {m[f'video_hit@{args.topk}']:.4f}")
    print(f"mean class accuracy {m['mean_class_accuracy']:.4f}")
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'confusion.png'}")
    return 0
