"""``p3d test WEIGHTS``: video-level testing as the paper (Sec. 4.1): 20 clips per video, centre crop, averaged.

Reports clip hit@1, video hit@1 and hit@5 (multi-label aware), per-class accuracy; writes ``metrics.json``,
``predictions.jsonl`` and ``confusion.png`` to ``--out``.  The dataset defaults to the validation/test list of
the checkpoint's training configuration.  Runs sharded under torchrun (results gathered by video id).
"""

from __future__ import annotations

import argparse
import json
import logging

from p3d.commands._args import add_data_arguments, samples_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="a p3d train checkpoint (or, with --model, a pretrained tag / .safetensors)")
    p.add_argument("--model", default=None, help="registry name when WEIGHTS is not a p3d train checkpoint")
    add_data_arguments(
        p,
        title="data (default: the checkpoint's validation list; with --data-root the kind defaults to ucf101)",
        split_help="UCF101 split 1..3 (default 1) / Kinetics split value (default val)",
        subset_help="UCF101 train/test (default test), ActivityNet subset (default validation)",
    )
    g = p.add_argument_group("protocol")
    g.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    g.add_argument("--clip-batch", type=int, default=8, help="clips per forward pass (bounds memory)")
    g.add_argument("--topk", type=int, default=5, help="k of video hit@k (default 5)")
    g.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    g.add_argument("--device", default="auto")
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: the spare cores; 0 = in-process)",
    )
    g.add_argument("--max-videos", type=int, default=None, help="test only the first N videos")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint run>/test or ./p3d-test)")


def _samples(args: argparse.Namespace, state: dict | None):
    from p3d.engine.config import TrainConfig
    from p3d.engine.trainer import build_samples_for

    if args.data_root is None:
        if state is None:
            raise ValueError("--data-root is required when WEIGHTS is not a p3d train checkpoint")
        cfg = TrainConfig.from_dict(state["config"])
        samples = build_samples_for(cfg, train=False)
        if samples is None:
            raise ValueError("the checkpoint's configuration has no validation list; give --data-root")
        return samples
    return samples_from_args(args, default_kind="ucf101", for_test=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from p3d.engine.checkpoint import atomic_write_bytes
    from p3d.engine.distributed import cleanup, init_distributed
    from p3d.engine.evaluate import evaluate, plot_confusion, write_predictions
    from p3d.engine.inference import load_for_inference

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.clips < 1 or args.clip_batch < 1:
        raise ValueError(f"--clips and --clip-batch must be >= 1, got {args.clips}, {args.clip_batch}")
    info = init_distributed(args.device)
    try:
        model, classes, state = load_for_inference(args.weights, args.model)
        samples = _samples(args, state)
        if classes is not None and list(samples.classes) != classes:
            raise ValueError(
                f"{args.weights}: trained on {len(classes)} classes {classes[:5]}..., the test list has "
                f"{len(samples.classes)} {list(samples.classes)[:5]}...; class lists must match"
            )
        model.to(info.device)
        result = evaluate(
            model,
            samples,
            num_clips=args.clips,
            clip_batch=args.clip_batch,
            device=info.device,
            amp=args.amp,
            num_workers=args.workers,
            rank=info.rank,
            world_size=info.world_size,
            max_videos=args.max_videos,
            progress=info.is_main,
        )
    finally:
        cleanup()
    if not info.is_main:
        return 0
    m = result.metrics(topk=args.topk)
    if args.out:
        out = Path(args.out)
    elif state is not None:
        out = Path(args.weights).resolve().parent.parent / "test"
    else:
        out = Path("p3d-test")
    out.mkdir(parents=True, exist_ok=True)
    m["weights"] = str(args.weights)
    m["classes"] = list(samples.classes)
    m["failed"] = result.failed
    atomic_write_bytes(out / "metrics.json", (json.dumps(m, indent=1) + "\n").encode())
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
    print(f"clip hit@1   {m['clip_hit@1']:.4f}")
    print(f"video hit@1  {m['video_hit@1']:.4f}")
    print(f"video hit@{args.topk}  {m[f'video_hit@{args.topk}']:.4f}")
    print(f"mean class accuracy {m['mean_class_accuracy']:.4f}")
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'confusion.png'}")
    return 0
