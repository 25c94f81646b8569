"""Dense extraction throughput against the plain clip forward on the same windows, in one process.

    python benchmarks/bench_dense.py --width 64 --size 160 --videos 4 --stride 16 --batch-size 8 --repeats 3

Writes long synthetic videos (:func:`p3d.data.make_synthetic_untrimmed`, H.264) to a temporary folder, then measures,
alternating, ``--repeats`` times:

* forward: the windows of those videos, decoded beforehand and held in memory as uint8, through the same
  preparation and model (``to_model_input`` + ``forward_layers`` + layer reduction) in batches of ``batch-size``
  (windows/s) -- no decoding;
* dense: :func:`p3d.representation.dense.extract_dense_features` end to end (one decoding pass per video, windows
  cut from a rolling buffer, batched across videos, forward, sequences written to a feature store) (windows/s);

and prints the medians and the median of the per-repeat ratios dense / forward (goal: close to 1; the difference
is the cost of decoding each frame once, plus the last batch, padded to full size).  Both use the same model, batch
size, device and thread count.  The CPU seconds per window of both (this process and its workers) give a ratio that
other load on a shared machine disturbs less.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch

from _common import cpu_seconds  # noqa: E402
from p3d.data import make_synthetic_untrimmed, parse_activitynet
from p3d.data.dense import iter_video_windows
from p3d.data.transforms import to_model_input
from p3d.engine.inference import for_inference
from p3d.models import create_model
from p3d.representation.dense import dense_meta, extract_dense_features
from p3d.representation.extract import build_meta, reduce_layer
from p3d.spec import InputSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="p3d63")
    p.add_argument("--width", type=int, default=64, help="conv1 channels (64: the paper's network)")
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--segment-frames", type=int, nargs=2, default=[48, 96], help="frames per action (3 per video)")
    p.add_argument("--background-frames", type=int, nargs=2, default=[24, 72], help="still frames around them")
    p.add_argument("--video-size", type=int, nargs=2, default=[182, 242], metavar=("H", "W"))
    p.add_argument("--clip-len", type=int, default=16)
    p.add_argument("--size", type=int, default=160, help="crop size")
    p.add_argument("--stride", type=int, default=16, help="frames between window starts")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--layers", nargs="+", default=["pool5"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = InputSpec(clip_len=args.clip_len, size=(args.size, args.size), resize=tuple(args.video_size))
    model = create_model(args.model, width=args.width, num_classes=6, input_spec=spec).eval()
    net = for_inference(model, device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gt = make_synthetic_untrimmed(tmp, args.videos, num_classes=6, segments_per_video=(3, 3),
                                      segment_frames=tuple(args.segment_frames),
                                      background_frames=tuple(args.background_frames), size=tuple(args.video_size),
                                      validation_fraction=1.0)  # fmt: skip
        samples = parse_activitynet(gt, tmp, subset="validation")
        windows = np.concatenate(
            [c.frames for s in samples for c in iter_video_windows(s.path, spec, args.stride, chunk=64)]
        )
        n = len(windows)
        print(f"{len(samples)} long videos, {n} windows of {args.clip_len} frames every {args.stride}, "
              f"written and decoded in {time.perf_counter() - t0:.1f} s")  # fmt: skip
        meta = build_meta(model, args.layers, num_clips=0, flip=False, map_pooling="max", class_names=samples.classes,
                          dense=dense_meta(spec, args.stride))  # fmt: skip

        def forward_pass() -> tuple[float, float]:
            c0, t = cpu_seconds(children=True), time.perf_counter()
            with torch.inference_mode():
                for i in range(0, n, args.batch_size):
                    x = torch.from_numpy(windows[i : i + args.batch_size]).to(device)
                    outs = net.forward_layers(to_model_input(x, spec), args.layers)
                    _ = {k: reduce_layer(v).float().cpu() for k, v in outs.items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            return n / (time.perf_counter() - t), (cpu_seconds(children=True) - c0) / n

        def dense_pass(k: int) -> tuple[float, float]:
            c0 = cpu_seconds(children=True)
            stats = extract_dense_features(model, samples, f"{tmp}/store{k}", meta, layers=args.layers,
                                           stride=args.stride, batch_size=args.batch_size, num_workers=args.workers,
                                           device=device, progress=False)  # fmt: skip
            assert stats.clips == n and stats.written == len(samples), (stats.clips, n)
            return stats.clips_per_second, (cpu_seconds(children=True) - c0) / n

        forward_pass()  # warm-up: oneDNN primitives for this batch size
        fwd, dense, cpu_fwd, cpu_dense = [], [], [], []
        for k in range(args.repeats):  # alternating which goes first, so that a load trend favours neither
            if k % 2:
                d, cd = dense_pass(k)
                f, cf = forward_pass()
            else:
                f, cf = forward_pass()
                d, cd = dense_pass(k)
            fwd.append(f), dense.append(d), cpu_fwd.append(cf), cpu_dense.append(cd)
            print(f"repeat {k}: forward {f:.2f} windows/s, dense {d:.2f} windows/s, ratio {d / f:.3f}")
    res = {
        "model": args.model,
        "width": args.width,
        "input": [args.clip_len, args.size, args.size],
        "video_size": args.video_size,
        "stride": args.stride,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "videos": len(samples),
        "windows": n,
        "forward_windows_per_s": round(statistics.median(fwd), 2),
        "dense_windows_per_s": round(statistics.median(dense), 2),
        "ratio": round(statistics.median(d / f for d, f in zip(dense, fwd, strict=True)), 3),
        "ratios": [round(d / f, 3) for d, f in zip(dense, fwd, strict=True)],
        "cpu_ratio": round(statistics.median(cf / cd for cf, cd in zip(cpu_fwd, cpu_dense, strict=True)), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
