"""``p3d predict VIDEO... --weights W``: the top-k labels of arbitrary video files (20 clips each, scores averaged).

W is anything the weights resolver reads (a ``p3d train`` run folder or checkpoint, a tag, a ``.safetensors``); the
class names come from the weights when they carry them.  Exit status 1 when a video could not be read (the reason
is printed, and is in the JSON output).

``--timeline OUTDIR`` (long, untrimmed videos): class scores of every window along each video (windows every
``--stride`` frames, :mod:`p3d.data.dense`), smoothed, and the action segments found in them (threshold, then
temporal NMS: :mod:`p3d.evaluation.timeline`, options below); per video ``OUTDIR/<name>.json``, ``.windows.csv``,
``.segments.csv`` and ``.png``.  The top-k labels are then those of the mean window scores.

A flow model (two input channels; the weights say so) reads flow files / flow frame folders, or RGB videos with
``--flow-from-rgb`` (TV-L1 computed from the decoded frames on the model's device).  ``--flow-weights`` adds a flow
stream to the RGB model: the fused top-k is the weighted mean of the two streams' softmax scores
(``--fusion-weights``), each stream's own top-1 is shown beside it.
"""

from __future__ import annotations

import argparse
import json

from p3d.commands._args import (
    add_flow_arguments,
    add_fusion_arguments,
    add_model_arguments,
    add_runtime_arguments,
    check_non_negative,
    check_positive,
    flow_from_rgb_from_args,
    model_from_args,
)
from p3d.commands._timeline import add_detection_arguments, add_window_arguments, detection_params, window_options


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files (flow files or frame folders for a flow model)")
    add_model_arguments(p)
    p.add_argument("--classes", default=None, help="class names, one per line (default: the weights')")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    add_fusion_arguments(
        p,
        flow_weights_help="a flow model to fuse with the RGB model --weights",
        flow_root_help="folder of the videos' flow (`p3d flow` output): <video stem>.flow.mkv or a <video stem>/ "
        "flow folder",
    )
    add_flow_arguments(p)
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


def _flow_path(video: str, root: str | None) -> str:
    """Where the flow of ``video`` is: under ``root`` (``<stem>.flow.mkv`` or a ``<stem>/`` frame folder)."""
    from pathlib import Path

    from p3d.data.sources import source_stem
    from p3d.data.video import FLOW_SUFFIX

    if root is None:
        return video
    stem = source_stem(video)
    for cand in (Path(root) / (stem + FLOW_SUFFIX), Path(root) / stem):
        if cand.exists():
            return str(cand)
    return str(Path(root) / (stem + FLOW_SUFFIX))  # reported as not found, with the path looked for


def _scores(model, paths: list[str], classes: list[str], args: argparse.Namespace, device) -> dict[int, dict]:
    from pathlib import Path

    from p3d.data import Sample, SampleList, VideoClipsDataset
    from p3d.data.datasets import input_modality
    from p3d.engine.evaluate import score_videos

    flow = flow_from_rgb_from_args(args) if input_modality(model.input_spec) == "flow" else False
    samples = SampleList([Sample(p, (), Path(p).stem) for p in paths], classes)
    ds = VideoClipsDataset(samples, model.input_spec, num_clips=args.clips, flat=False, raw=True, flow_from_rgb=flow)
    scores, _ = score_videos(
        model, ds, device=device, clip_batch=args.batch_size, amp=args.amp, num_workers=args.workers
    )
    return scores


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from p3d.data.datasets import input_modality
    from p3d.data.sources import scan_frame_folder
    from p3d.engine.distributed import pick_device

    check_positive(topk=args.topk, clips=args.clips, batch_size=args.batch_size)
    check_non_negative(workers=args.workers)
    if args.timeline is None and (args.stride is not None or args.last_window is not None):
        raise ValueError("--stride and --last-window set the windows of --timeline; add --timeline OUTDIR")
    params = detection_params(args)
    window = window_options(args)
    if args.weights is None:
        raise ValueError("--weights is required (a run folder, checkpoint, tag or .safetensors)")
    for v in args.videos:
        if Path(v).is_dir() and not scan_frame_folder(v).modalities:
            raise IsADirectoryError(f"{v}: is a folder (not a frame folder of img_/flow_x_ images), expected a video")
        if not Path(v).exists():
            raise FileNotFoundError(f"{v}: video not found")
    if args.flow_root is not None and args.flow_from_rgb:
        raise ValueError("--flow-root and --flow-from-rgb exclude each other: stored flow, or flow from the videos")
    w_rgb, w_flow = args.fusion_weights
    if min(w_rgb, w_flow) < 0 or w_rgb + w_flow <= 0:
        raise ValueError(f"--fusion-weights must be two numbers >= 0, not both 0, got {args.fusion_weights}")
    model = model_from_args(args)
    streams = [("", model)]
    if args.flow_weights is not None:
        if input_modality(model.input_spec) != "rgb":
            raise ValueError(f"{args.weights}: a flow model; give the RGB model as --weights, the flow one as "
                             f"--flow-weights")  # fmt: skip
        flow_model = model_from_args(args, args.flow_weights)
        if input_modality(flow_model.input_spec) != "flow":
            raise ValueError(f"{args.flow_weights}: an RGB model, --flow-weights takes a flow model")
        if flow_model.num_classes != model.num_classes:
            raise ValueError(f"{args.flow_weights}: {flow_model.num_classes} classes, {args.weights} has "
                             f"{model.num_classes}: the streams must share one class list")  # fmt: skip
        if not (args.flow_root or args.flow_from_rgb):
            raise ValueError("--flow-weights: give --flow-root (the videos' `p3d flow` output) or --flow-from-rgb")
        streams = [("rgb", model), ("flow", flow_model)]
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
        if len(streams) > 1 or args.flow_from_rgb:
            raise ValueError("--timeline scores one RGB model; it does not take --flow-weights or --flow-from-rgb")
        return _timelines(args, model, classes, device, params, *window)
    per_stream = {}
    for name, m in streams:
        paths = [_flow_path(v, args.flow_root) if name == "flow" else v for v in args.videos]
        per_stream[name] = _scores(m, paths, classes, args, device)
    weights = {"rgb": w_rgb, "flow": w_flow}

    def top(s: np.ndarray) -> list[tuple[str, float]]:
        t = torch.from_numpy(s).topk(min(args.topk, s.size))
        names = [classes[j] if classes else str(j) for j in t.indices.tolist()]
        return list(zip(names, t.values.tolist(), strict=True))

    status = 0
    for i, v in enumerate(args.videos):
        rows = {name: per_stream[name][i] for name, _ in streams}
        bad = {name: r["error"] for name, r in rows.items() if not r["valid"]}
        if bad:
            status = 1
            error = "; ".join(f"{n} stream: {e}" if n else e for n, e in bad.items())
            print(json.dumps({"video": v, "error": error}) if args.json else f"{v}: unreadable: {error}")
            continue
        if len(streams) == 1:
            fused = rows[""]["scores"]
        else:
            fused = sum(weights[n] * rows[n]["scores"].astype(np.float64) for n in rows) / (w_rgb + w_flow)
        pairs = top(np.asarray(fused, np.float32))
        if args.json:
            obj = {"video": v, "top": [[n, round(float(p), 6)] for n, p in pairs]}
            if len(streams) > 1:
                obj["streams"] = {n: [[c, round(float(p), 6)] for c, p in top(r["scores"])] for n, r in rows.items()}
            print(json.dumps(obj))
        else:
            print(v)
            for n, p in pairs:
                print(f"  {p:7.4f}  {n}")
            if len(streams) > 1:
                for n, r in rows.items():
                    c, p = top(r["scores"])[0]
                    print(f"  ({n} stream alone: {c} {p:.4f})")
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
