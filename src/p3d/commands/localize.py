"""``p3d localize SOURCE --annotations GT.json``: temporal action localisation scored as ActivityNet scores it.

SOURCE is a dense feature store (``p3d extract --dense --layers ... prob``; a folder or a merged ``.safetensors``)
or a folder of timeline ``.json`` files (``p3d predict --timeline``).  The window scores are the model's own
classifier on each window (the stored ``prob``, or the softmax of ``logits``); segments are detected with the
options below (:mod:`p3d.evaluation.timeline`) and scored against the ActivityNet v1.3 annotations of ``--subset``:
average precision per class at tIoU 0.5:0.05:0.95, their mean over classes (mAP) at each threshold and the mean
over thresholds (the official ``eval_detection.py``).  Each video's window scores pooled over time (``--pooling``)
classify it: hit@1, hit@3 and mAP (``eval_classification.py``).  The paper's own ActivityNet protocol, a linear SVM
on the video-level features, is ``p3d svm`` on the same dense store (its video rows are the window means).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from p3d.commands._timeline import add_detection_arguments, detection_params


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="dense feature store (folder or .safetensors), or a folder of "
                   "timeline .json files")  # fmt: skip
    p.add_argument("--annotations", required=True, metavar="JSON", help="ActivityNet v1.3 annotation file")
    p.add_argument(
        "--subset", default="validation", help="annotation subset to score (default validation; 'all': every video)"
    )
    p.add_argument(
        "--layer",
        choices=("prob", "logits"),
        default=None,
        help="stored class scores of a dense store (default: prob if stored, else logits)",
    )
    p.add_argument(
        "--pooling",
        choices=("mean", "max", "topk"),
        default="mean",
        help="video-level class scores from the window scores (default mean)",
    )
    p.add_argument("--pooling-k", type=int, default=8, help="windows per class for --pooling topk (default 8)")
    add_detection_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "-o",
        "--output",
        default=None,
        metavar="DIR",
        help="write metrics.json, detections.json/.csv (ActivityNet submission), classification.json and timelines",
    )
    g.add_argument(
        "--plots", type=int, default=4, metavar="N", help="timelines (JSON, CSV, PNG with ground truth) of the first N "
        "videos in DIR/timelines (default 4; 0: none)"
    )  # fmt: skip
    g.add_argument("--json", action="store_true", help="print the metrics as JSON")


def _read_source(source: Path, layer: str | None):
    """``({video id: (scores, times)}, class names)`` from a dense store or a folder of timelines."""
    from p3d.representation.store import META_NAME, list_parts

    if not source.exists():
        raise FileNotFoundError(f"{source}: no such feature store or timeline folder")
    if source.is_file() or (source / META_NAME).is_file() or list_parts(source):
        from p3d.representation.dense import store_window_scores
        from p3d.representation.store import read_features

        return store_window_scores(read_features(source), layer)
    from p3d.evaluation.timeline import is_timeline, read_timeline

    if layer is not None:
        raise ValueError("--layer applies to a dense feature store, not to timeline files")
    files = sorted(f for f in source.glob("*.json") if is_timeline(f))
    if not files:
        raise FileNotFoundError(f"{source}: neither a feature store nor a folder of timeline .json files")
    out, names = {}, None
    for f in files:
        tl = read_timeline(f)
        if names is not None and tl.class_names != names:
            raise ValueError(f"{f}: class names differ from those of the other timelines")
        names = tl.class_names
        if tl.video in out:
            raise ValueError(f"{f}: a second timeline of video {tl.video!r}")
        out[tl.video] = (tl.scores, tl.window_times)
    return out, names


def run(args: argparse.Namespace) -> int:
    from p3d.evaluation.localization import read_ground_truth, write_classifications, write_detections
    from p3d.evaluation.timeline import evaluate_localization, timeline_name, write_timeline
    from p3d.fileio import atomic_write_json, check_writable

    params = detection_params(args)
    if args.plots < 0 or args.pooling_k < 1:
        raise ValueError(f"--plots must be >= 0 and --pooling-k >= 1, got {args.plots}, {args.pooling_k}")
    out = check_writable(args.output) if args.output else None
    gt = read_ground_truth(args.annotations, None if args.subset == "all" else args.subset)
    if not gt.segments:
        raise ValueError(f"{args.annotations}: no video in subset {args.subset!r}")
    scores, names = _read_source(Path(args.source), args.layer)
    res = evaluate_localization(scores, names, gt, params, pooling=args.pooling, pooling_k=args.pooling_k)
    if not res.timelines:
        raise ValueError(f"{args.source}: none of its {len(scores)} videos is in subset {args.subset!r}")
    metrics = {
        "source": str(args.source),
        "annotations": str(args.annotations),
        "subset": args.subset,
        "params": asdict(params),
        **res.as_dict(),
    }
    if out is not None:
        write_detections(out / "detections.json", res.detections)
        write_detections(out / "detections.csv", res.detections)
        write_classifications(out / "classification.json", res.video_scores, res.scored_classes)
        for gid in sorted(res.timelines)[: args.plots]:
            write_timeline(res.timelines[gid], out / "timelines", timeline_name(gid), ground_truth=gt.segments[gid])
        atomic_write_json(out / "metrics.json", metrics)
    if args.json:
        print(json.dumps(metrics))
        return 0
    det, cls = res.detection, res.classification
    n_inst = sum(len(a) for v, a in gt.segments.items())
    print(
        f"{len(res.timelines)} video(s) of subset {args.subset!r} scored ({n_inst} instances, {len(det.classes)} "
        f"classes); {len(res.missing)} missing, {len(res.outside)} outside the subset ignored"
    )
    if res.unscored_classes:
        print(f"  score columns that are no annotated class (ignored): {', '.join(res.unscored_classes)}")
    print("detection mAP at tIoU:")
    print("  " + " ".join(f"{t:5.2f}" for t in det.tiou_thresholds) + "   mean")
    print("  " + " ".join(f"{m:5.3f}" for m in det.mAP) + f"  {det.average_mAP:5.3f}")
    hits = ", ".join(f"hit@{k} {v:.1%}" for k, v in cls.hits.items())
    print(f"video classification ({args.pooling} of window scores): {hits}, mAP {cls.mAP:.3f}")
    if out is not None:
        print(f"wrote {out}/metrics.json, detections.json/.csv, classification.json, timelines/")
    return 0
