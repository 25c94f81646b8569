"""Feature-extraction throughput against the model's pure forward throughput, in one process.

    python benchmarks/bench_extract.py --model p3d63 --width 32 --videos 16 --num-clips 4 --batch-size 16

Writes a synthetic dataset (PyAV, H.264) to a temporary folder, then measures

* forward: ``model.forward_layers`` on a resident random batch of ``batch-size`` clips (clips/s), and
* extract: :func:`p3d.representation.extract.extract_features` end to end (decode in workers, normalise, batch across
  videos, forward, average, write the store) on the synthetic videos (clips/s),

and prints their ratio (goal: >= 0.9).  Both use the same model, batch size, device and thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from _common import cpu_seconds  # noqa: E402
from p3d.data import build_samples, make_synthetic_dataset
from p3d.models import create_model
from p3d.representation.extract import build_meta, extract_features, forward_throughput
from p3d.spec import InputSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="p3d63")
    p.add_argument("--width", type=int, default=64, help="conv1 channels (64: the paper's network)")
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--frames", type=int, default=64, help="frames per synthetic video")
    p.add_argument("--video-size", type=int, nargs=2, default=[128, 170], metavar=("H", "W"))
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--size", type=int, default=112, help="crop size")
    p.add_argument("--num-clips", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--layers", nargs="+", default=["pool5"])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = InputSpec(clip_len=args.clip_len, size=(args.size, args.size), resize=tuple(args.video_size))
    model = create_model(args.model, width=args.width, num_classes=6, input_spec=spec).eval()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_synthetic_dataset(tmp, num_classes=6, videos_per_class=-(-args.videos // 6), num_frames=args.frames,
                               size=tuple(args.video_size), test_fraction=0.0)  # fmt: skip
        samples = build_samples("ucf101", tmp, split=1, subset="train")
        samples.samples = samples.samples[: args.videos]
        print(f"synthetic data: {len(samples)} videos in {time.perf_counter() - t0:.1f}s")
        iters = max(2, args.videos * args.num_clips // args.batch_size)
        fwd = forward_throughput(model, spec, args.layers, args.batch_size, iters=iters, device=args.device)
        meta = build_meta(model, args.layers, num_clips=args.num_clips, flip=False,
                          map_pooling="max", class_names=samples.classes)  # fmt: skip
        # warm-up on other videos' worth of clips (oneDNN primitive creation for this batch size, worker start)
        extract_features(model, samples.samples[:2], f"{tmp}/warmup", meta, layers=args.layers,
                         num_clips=args.num_clips, batch_size=args.batch_size, num_workers=args.workers,
                         device=args.device, progress=False)  # fmt: skip
        c0 = cpu_seconds(children=True)
        stats = extract_features(model, samples, f"{tmp}/feats", meta, layers=args.layers,
                                 num_clips=args.num_clips, batch_size=args.batch_size, num_workers=args.workers,
                                 device=args.device, progress=False)  # fmt: skip
        cpu_extract = cpu_seconds(children=True) - c0
        c0 = cpu_seconds(children=True)
        fwd_after = forward_throughput(model, spec, args.layers, args.batch_size, iters=iters, device=args.device)
    cpu_forward = (
        (cpu_seconds(children=True) - c0) * iters / (iters + 1)
    )  # forward_throughput runs one untimed warm-up batch
    pure = 0.5 * (fwd + fwd_after)  # before and after, to even out the load of a shared machine
    res = {
        "model": args.model,
        "width": args.width,
        "input": [args.clip_len, args.size, args.size],
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "videos": stats.written,
        "clips": stats.clips,
        "forward_clips_per_s": round(pure, 2),
        "forward_clips_per_s_before_after": [round(fwd, 2), round(fwd_after, 2)],
        "extract_clips_per_s": round(stats.clips_per_second, 2),
        "extract_videos_per_s": round(stats.videos_per_second, 3),
        "ratio": round(stats.clips_per_second / pure, 3),
        "forward_share_of_extract_time": round(stats.forward_seconds / stats.seconds, 3),
        # CPU seconds per clip (main process + decoding workers): robust to other load on a shared machine;
        # on a CPU-bound run the achievable ratio is forward / extract CPU time
        "cpu_s_per_clip_forward": round(cpu_forward / (iters * args.batch_size), 4),
        "cpu_s_per_clip_extract": round(cpu_extract / stats.clips, 4),
        "cpu_ratio": round((cpu_forward / (iters * args.batch_size)) / (cpu_extract / stats.clips), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
