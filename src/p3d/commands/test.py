"""``p3d test WEIGHTS``: video-level testing as the paper (Sec. 4.1): 20 clips per video, centre crop, averaged.

WEIGHTS is anything the weights resolver reads (a ``p3d train`` run folder or checkpoint, a tag, a converted or
exported ``.safetensors``).  Reports clip hit@1, video hit@1 and hit@k (multi-label aware) and per-class accuracy;
writes ``metrics.json``, ``predictions.jsonl`` and ``confusion.png`` to ``--out``.  The dataset defaults to the
validation/test list of the run's training configuration.  Runs sharded under torchrun (results gathered by video
id).  Unreadable videos are listed with their reasons.

Two streams: ``p3d test RGB --flow-weights FLOW`` tests both models (the flow model on ``--flow-root``, the
``p3d flow`` output of the same dataset, or on flow computed from the RGB videos with ``--flow-from-rgb``) and
reports each stream and their late fusion (weighted mean of softmax scores, ``--fusion-weights``,
:mod:`p3d.engine.fusion`).  Either stream may be given as the ``scores.npz`` an earlier ``p3d test`` wrote.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from p3d.commands._args import (
    add_data_arguments,
    add_flow_arguments,
    add_fusion_arguments,
    add_model_arguments,
    add_runtime_arguments,
    check_non_negative,
    check_positive,
    flow_from_rgb_from_args,
    model_from_args,
    samples_from_args,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "weights",
        help="a p3d train run folder or checkpoint, a pretrained tag or a .safetensors file (RGB or flow: the "
        "weights say which), or a scores.npz an earlier p3d test wrote",
    )
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
    add_fusion_arguments(
        p,
        flow_weights_help="a flow model (or its scores.npz) to fuse with the RGB model WEIGHTS: each stream and the "
        "fusion are reported",
        flow_root_help="the `p3d flow` output of --data-root: the flow model reads <video>.flow.mkv there (same "
        "list, kind, split)",
    )
    add_flow_arguments(p)
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


def _stream_samples(args: argparse.Namespace, weights: str, run_dir: Path | None, root: str | None, rgb_samples):
    """The test list of the flow stream: the RGB list's videos under ``--flow-root``, the RGB videos themselves
    (``--flow-from-rgb``), or the flow run's own validation list."""
    if args.flow_from_rgb:
        return rgb_samples
    if root is not None:
        if args.data_root is None:
            raise ValueError("--flow-root needs --data-root (the RGB list whose videos it holds the flow of)")
        return samples_from_args(argparse.Namespace(**{**vars(args), "data_root": root}), default_kind="ucf101",
                                 for_test=True)  # fmt: skip
    if args.data_root is not None:
        raise ValueError(
            f"{weights}: a flow model; with --data-root give --flow-root (the `p3d flow` output of that dataset) or "
            f"--flow-from-rgb (compute flow from the videos)"
        )
    return _samples(args, run_dir)


def _test_stream(args, info, weights: str, role: str, samples=None):
    """Run (or load, for a ``scores.npz``) one stream; returns ``(EvalResult, modality)``."""
    from p3d.data.datasets import input_modality
    from p3d.engine.evaluate import evaluate_videos
    from p3d.engine.fusion import load_scores

    if str(weights).endswith(".npz"):
        return load_scores(weights)
    model = model_from_args(args, weights)
    modality = input_modality(model.input_spec)
    run_dir = _run_dir(weights)
    if samples is None:
        if modality == "flow" and role == "flow":
            raise AssertionError("the flow stream's samples are chosen by the caller")
        if modality == "flow" and (args.flow_from_rgb or args.flow_root):
            samples = _stream_samples(args, weights, run_dir, args.flow_root,
                                      _samples(args, run_dir) if args.flow_from_rgb else None)  # fmt: skip
        else:
            samples = _samples(args, run_dir)
    classes = model.pretrained_cfg.class_names
    if classes is not None and list(samples.classes) != list(classes):
        raise ValueError(
            f"{weights}: trained on {len(classes)} classes {list(classes)[:5]}..., the test list has "
            f"{len(samples.classes)} {list(samples.classes)[:5]}...; class lists must match"
        )
    if model.num_classes != len(samples.classes):
        raise ValueError(
            f"{weights}: a {model.num_classes}-way classifier, the test list has {len(samples.classes)} classes"
        )
    flow = flow_from_rgb_from_args(args) if modality == "flow" else False
    if info.is_main and len(args.streams) > 1:
        print(f"{modality} stream: {weights}{' (flow computed from RGB frames)' if flow else ''}")
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
        flow_from_rgb=flow,
    )
    return result, modality


def _print_metrics(label: str, m: dict, topk: int) -> None:
    clip = "" if m["clip_hit@1"] != m["clip_hit@1"] else f"clip hit@1 {m['clip_hit@1']:.4f}  "
    print(
        f"{label:<8} {clip}video hit@1 {m['video_hit@1']:.4f}  video hit@{topk} {m[f'video_hit@{topk}']:.4f}  "
        f"mean class accuracy {m['mean_class_accuracy']:.4f}"
    )


def run(args: argparse.Namespace) -> int:
    from p3d.engine.distributed import cleanup, init_distributed
    from p3d.engine.evaluate import write_predictions
    from p3d.engine.fusion import fuse_results, save_scores
    from p3d.evaluation.plots import plot_confusion
    from p3d.fileio import atomic_write_json, check_writable

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    check_positive(clips=args.clips, batch_size=args.batch_size, topk=args.topk, max_videos=args.max_videos)
    check_non_negative(workers=args.workers)
    w_rgb, w_flow = args.fusion_weights
    if min(w_rgb, w_flow) < 0 or w_rgb + w_flow <= 0:
        raise ValueError(f"--fusion-weights must be two numbers >= 0, not both 0, got {args.fusion_weights}")
    args.streams = [args.weights] + ([args.flow_weights] if args.flow_weights else [])
    npz = str(args.weights).endswith(".npz")
    run_dir = None if npz else _run_dir(args.weights)
    out = Path(args.out) if args.out else (run_dir / "test" if run_dir is not None else Path("p3d-test"))
    if args.flow_weights and not str(args.flow_weights).endswith(".npz") and args.data_root is not None:
        if not (args.flow_root or args.flow_from_rgb):
            raise ValueError("--flow-weights with --data-root: give --flow-root (the `p3d flow` output of that "
                             "dataset) or --flow-from-rgb (flow computed from the videos)")  # fmt: skip
    if args.flow_root and args.flow_from_rgb:
        raise ValueError("--flow-root and --flow-from-rgb exclude each other: stored flow, or flow from the videos")
    info = init_distributed(args.device)
    ended = False
    results = {}
    try:
        if info.is_main:
            check_writable(out)
        first, modality = _test_stream(args, info, args.weights, "first")
        results[modality] = first
        if args.flow_weights:
            if modality != "rgb":
                raise ValueError(f"{args.weights}: a {modality} stream; give the RGB model first and the flow model "
                                 f"with --flow-weights")  # fmt: skip
            samples = None
            if not str(args.flow_weights).endswith(".npz"):
                rgb_samples = None if npz else _samples(args, run_dir) if args.flow_from_rgb else None
                if args.flow_from_rgb and rgb_samples is None:
                    raise ValueError("--flow-from-rgb with saved RGB scores needs --data-root (the RGB videos)")
                samples = _stream_samples(args, args.flow_weights, _run_dir(args.flow_weights), args.flow_root,
                                          rgb_samples)  # fmt: skip
            second, modality2 = _test_stream(args, info, args.flow_weights, "flow", samples)
            if modality2 != "flow":
                raise ValueError(f"{args.flow_weights}: an {modality2} stream, --flow-weights takes a flow model")
            results["flow"] = second
        ended = True
    finally:
        cleanup(sync=ended)
    if not info.is_main:
        return 0
    streams = {}
    for name, r in results.items():
        m = r.metrics(topk=args.topk)
        m["failed"] = r.failed
        streams[name] = m
        if len(results) > 1:
            save_scores(r, out / f"{name}.scores.npz", name)
    if len(results) > 1:
        result = fuse_results(results, {"rgb": w_rgb, "flow": w_flow})
    else:
        result = next(iter(results.values()))
    m = result.metrics(topk=args.topk)
    m["weights"] = str(args.weights)
    m["classes"] = list(result.classes)
    m["failed"] = result.failed
    if len(results) > 1:
        m["flow_weights"] = str(args.flow_weights)
        m["fusion"] = {"rule": "weighted mean of the streams' video softmax scores", "weights": {"rgb": w_rgb,
                       "flow": w_flow}}  # fmt: skip
        m["streams"] = {k: {kk: vv for kk, vv in v.items() if kk not in ("confusion",)} for k, v in streams.items()}
    atomic_write_json(out / "metrics.json", m)
    write_predictions(result, out / "predictions.jsonl", topk=args.topk)
    save_scores(result, out / "scores.npz", "fused" if len(results) > 1 else next(iter(results)))
    title = "fusion" if len(results) > 1 else Path(args.weights).name
    plot_confusion(m["confusion"], list(result.classes), out / "confusion.png",
                   title=f"{title}: video hit@1 {m['video_hit@1']:.3f}")  # fmt: skip
    for name, r in results.items():
        sm = streams[name]
        print(
            f"{name}: {r.num_videos} videos, {r.num_clips} clips ({len(r.failed)} unreadable), "
            f"{sm['clips_per_s']:.1f} clips/s"
        )
        for path, reason in r.failed.items():
            print(f"  unreadable: {path}: {reason}")
    for name in results:
        _print_metrics(name, streams[name], args.topk)
    if len(results) > 1:
        print(f"fusion rgb:flow = {w_rgb:g}:{w_flow:g} over {result.num_videos} videos")
        _print_metrics("fused", m, args.topk)
    print(f"wrote {out / 'metrics.json'}, {out / 'predictions.jsonl'}, {out / 'scores.npz'}, {out / 'confusion.png'}")
    return 0
