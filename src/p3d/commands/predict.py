"""``p3d predict VIDEO...``: the top-k labels of arbitrary video files (20 clips each, scores averaged)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", help="video files")
    p.add_argument("--weights", required=True, help="a p3d train checkpoint, or with --model a tag / .safetensors")
    p.add_argument("--model", default=None, help="registry name when --weights is not a p3d train checkpoint")
    p.add_argument("--classes", default=None, help="class names, one per line (default: the checkpoint's)")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--clips", type=int, default=20, help="clips per video (paper: 20)")
    p.add_argument("--clip-batch", type=int, default=8, help="clips per forward pass (bounds memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="one JSON object per video instead of text")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from p3d.data import Sample, SampleList
    from p3d.engine.distributed import _pick_device
    from p3d.engine.evaluate import score_videos
    from p3d.engine.inference import load_for_inference

    for v in args.videos:
        if not Path(v).is_file():
            raise FileNotFoundError(f"{v}: video not found")
    if args.topk < 1:
        raise ValueError(f"--topk must be >= 1, got {args.topk}")
    model, classes, _ = load_for_inference(args.weights, args.model)
    if args.classes:
        classes = [ln.strip() for ln in Path(args.classes).read_text().splitlines() if ln.strip()]
    k_out = model.num_classes if hasattr(model, "num_classes") else None
    if classes is not None and k_out is not None and len(classes) != k_out:
        raise ValueError(f"{args.classes}: {len(classes)} class names for a {k_out}-way classifier")
    device = _pick_device(args.device, 0)
    model.to(device)
    from p3d.data import VideoClipsDataset

    samples = SampleList([Sample(str(v), (), Path(v).stem) for v in args.videos], list(classes or []))
    ds = VideoClipsDataset(samples, model.input_spec, num_clips=args.clips, flat=False)
    scores, _ = score_videos(model, ds, device=device, clip_batch=args.clip_batch, num_workers=0)
    status = 0
    for i, v in enumerate(args.videos):
        r = scores[i]
        if not r["valid"]:
            print(json.dumps({"video": v, "error": "unreadable"}) if args.json else f"{v}: unreadable video")
            status = 1
            continue
        s = torch.from_numpy(r["scores"])
        top = s.topk(min(args.topk, s.numel()))
        names = [classes[j] if classes else str(j) for j in top.indices.tolist()]
        if args.json:
            print(
                json.dumps(
                    {"video": v, "top": [[n, round(float(p), 6)] for n, p in zip(names, top.values, strict=True)]}
                )
            )
        else:
            print(v)
            for n, p in zip(names, top.values.tolist(), strict=True):
                print(f"  {p:7.4f}  {n}")
    return status
