"""``p3d predict VIDEO... --weights W``: the top-k labels of arbitrary video files (20 clips each, scores averaged).

W is anything the weights resolver reads (a ``p3d train`` run folder or checkpoint, a tag, a ``.safetensors``); the
class names come from the weights when they carry them.  Exit status 1 when a video could not be read (the reason
is printed, and is in the JSON output).
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files")
    add_model_arguments(p)
    p.add_argument("--classes", default=None, help="class names, one per line (default: the weights')")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    add_runtime_arguments(p, batch_size=8)
    p.add_argument("--json", action="store_true", help="one JSON object per video instead of text")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from p3d.data import Sample, SampleList, VideoClipsDataset
    from p3d.engine.distributed import pick_device
    from p3d.engine.evaluate import score_videos

    check_positive(topk=args.topk, clips=args.clips, batch_size=args.batch_size)
    check_non_negative(workers=args.workers)
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
