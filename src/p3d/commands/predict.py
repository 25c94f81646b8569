"""``p3d predict VIDEO... --weights W``: the top-k labels of arbitrary video files (20 clips each, scores averaged).

W is anything the weights resolver reads (a ``p3d train`` run folder or checkpoint, a tag, a ``.safetensors``); the
class names come from the weights when they carry them.  Exit status 1 when a video could not be read (the reason
is printed, and is in the JSON output).

``--timeline OUTDIR`` (long, untrimmed videos): class scores of every window along each video (windows every
``--stride`` frames, :mod:`p3d.data.dense`), smoothed, and the action segments found in them (threshold, then
temporal NMS: :mod:`p3d.evaluation.timeline`, options below); per video ``OUTDIR/<name>.json``, ``.windows.csv``,
``.segments.csv`` and ``.png``.  The top-k labels are then those of the mean window scores.
"""

from __future__ import annotations

import argparse
import json

from p3d.commands._args import (
    add_model_arguments,
    add_runtime_arguments,
    check_non_negative,
    check_positive,
    model_from_args,
)
from p3d.commands._timeline import add_detection_arguments, add_window_arguments, detection_params, window_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files")
    add_model_arguments(p)
    p.add_argument("--classes", default=None, help="class names, one per line (default: the weights')")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    add_runtime_arguments(p, batch_size=8)
    p.add_argument("--json", action="store_true", help="one JSON object per video instead of text")
    g = p.add_argument_group("timeline (long, untrimmed videos)")
    g.add_argument(
        "--timeline",
        default=None,
        metavar="OUTDIR",
        help="score every window along each video and write its timeline (JSON, CSV, PNG) and segments to OUTDIR",
    )
    add_window_arguments(g, dense_flag="--timeline")
    g.add_argument("--no-plot", action="store_true", help="timeline JSON and CSV only, no PNG")
    add_detection_arguments(p)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from p3d.data import Sample, SampleList, VideoClipsDataset
    from p3d.engine.distributed import pick_device
    from p3d.engine.evaluate import score_videos

    check_positive(topk=args.topk, clips=args.clips, batch_size=args.batch_size)
    check_non_negative(workers=args.workers)
    if args.timeline is None and (args.stride is not None or args.last_window is not None):
        raise ValueError("--stride and --last-window set the windows of --timeline; add --timeline OUTDIR")
    params = detection_params(args)
    window = window_options(args)
    if args.weights is None:
        raise ValueError("--weights is required (a run folder, checkpoint, tag or .safetensors)")
    for v in args.videos:
        if Path(v).is_dir():
            raise IsADirectoryError(f"{v}: is a folder, expected a video file")
        if not Path(v).is_file():
            raise FileNotFoundError(f"{v}: video not found")
    model = model_from_args(args)
    classes = list(model.pretrained_cfg.class_names or [])
    if args.classes:
        from p3d.fileio import read_text

        classes = [ln.strip() for ln in read_text(args.classes, "class names file").splitlines() if ln.strip()]
        if len(classes) != model.num_classes:
            raise ValueError(f"{args.classes}: {len(classes)} class names for a {model.num_classes}-way classifier")
    if model.num_classes < 1:
        raise ValueError(f"{args.weights}: the model has no classifier (num_classes 0); nothing to predict")
    device = pick_device(args.device, 0)
    if args.timeline is not None:
        return _timelines(args, model, classes, device, params, *window)
    samples = SampleList([Sample(str(v), (), Path(v).stem) for v in args.videos], classes)
    ds = VideoClipsDataset(samples, model.input_spec, num_clips=args.clips, flat=False, raw=True)
    scores, _ = score_videos(
        model, ds, device=device, clip_batch=args.batch_size, amp=args.amp, num_workers=args.workers
    )
    status = 0
    for i, v in enumerate(args.videos):
        r = scores[i]
        if not r["valid"]:
            status = 1
            print(json.dumps({"video": v, "error": r["error"]}) if args.json else f"{v}: unreadable: {r['error']}")
            continue
        s = torch.from_numpy(r["scores"])
        top = s.topk(min(args.topk, s.numel()))
        names = [classes[j] if classes else str(j) for j in top.indices.tolist()]
        pairs = list(zip(names, top.values.tolist(), strict=True))
        if args.json:
            print(json.dumps({"video": v, "top": [[n, round(float(p), 6)] for n, p in pairs]}))
        else:
            print(v)
            for n, p in pairs:
                print(f"  {p:7.4f}  {n}")
    return status


def _timelines(args: argparse.Namespace, model, classes: list[str], device, params, stride: int, last: str) -> int:
    """``--timeline``: window scores of each video, its timeline files, and the top-k of the mean window scores."""
    from pathlib import Path

    import numpy as np

    from p3d.data import Sample
    from p3d.evaluation.localization import pool_window_scores
    from p3d.evaluation.timeline import make_timeline, timeline_name, write_timeline
    from p3d.fileio import check_writable
    from p3d.representation.dense import iter_dense_features

    out = check_writable(args.timeline)
    names = classes or [str(k) for k in range(model.num_classes)]
    stems: list[str] = []
    for v in args.videos:  # file names: the video's stem, made unique
        stem, k = timeline_name(Path(v).stem), 1
        while stem in stems:
            k += 1
            stem = f"{timeline_name(Path(v).stem)}-{k}"
        stems.append(stem)
    samples = [Sample(str(v), (), Path(v).stem) for v in args.videos]
    results = {}
    for r in iter_dense_features(
        model,
        samples,
        layers=["prob"],
        stride=stride,
        last=last,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=device,
        amp=args.amp,
    ):
        results[r.index] = r
    status = 0
    for i, v in enumerate(args.videos):
        r = results[i]
        if r.outputs is None:
            status = 1
            print(json.dumps({"video": v, "error": r.error}) if args.json else f"{v}: unreadable: {r.error}")
            continue
        tl = make_timeline(v, r.outputs["prob"], r.times, names, params)
        paths = write_timeline(tl, out, stems[i], plot=not args.no_plot)
        mean = pool_window_scores(tl.scores)
        top = np.argsort(-mean, kind="stable")[: args.topk]
        if args.json:
            print(
                json.dumps(
                    {
                        "video": v,
                        "windows": len(tl.scores),
                        "top": [[names[j], round(float(mean[j]), 6)] for j in top],
                        "segments": tl.to_dict()["segments"],
                        "files": {k: str(p) for k, p in paths.items()},
                    }
                )
            )
            continue
        print(f"{v}: {len(tl.scores)} windows, {len(tl.segments)} segment(s) -> {paths['json']}")
        for j in top:
            print(f"  {mean[j]:7.4f}  {names[j]}")
        for seg in tl.segments:
            print(f"  [{seg['start']:8.2f} s, {seg['end']:8.2f} s]  {seg['score']:.3f}  {seg['label']}")
    return status
