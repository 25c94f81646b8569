"""Decode rate per core on UCF101-like files: the input of the UCF101-in-5-minutes projection (BENCHMARKS.md, "GPU").

    python benchmarks/bench_decode.py [--videos 8] [--rounds 3] [--work /tmp/p3d_bench_decode]

Files: ``benchmarks/gpu_suite.py``'s UCF101-like videos (320×240, 175 frames = 7 s at 25 fps, a key frame every 12
frames, ~0.5 Mbit/s; H.264 in .mp4 and MPEG-4 Part 2, XviD's format, in .avi).  For each codec, in one process, one
thread, interleaved over ``--rounds`` rounds (medians of CPU-time rates, so other load on a shared machine does not
count):

* ``codec``            PyAV decoding alone (YUV frames, no conversion);
* ``+ to_ndarray``     + resize to 182×242 RGB through ``VideoFrame.to_ndarray(width=, height=)`` (a new scaler
                       context per frame: p3d before issue 13);
* ``+ one scaler``     + the same resize through one ``VideoReformatter`` per file (p3d now; identical pixels);
* ``extraction item``  ``VideoClipsDataset(raw=True)[i]``: open, index, decode, resize, 20 centre-cropped 16×160×160
                       uint8 clips — what one decoding worker does per video in ``p3d extract``.

``--items-only`` prints just the extraction-item rates as JSON, to compare two checkouts alternately::

    for r in 1 2 3 4; do for src in OLD/src NEW/src; do PYTHONPATH=$src python benchmarks/bench_decode.py \
        --items-only; done; done
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import av
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_suite import Sizes, ensure_videos, mbit_s, video_list  # noqa: E402
from p3d.data import VideoClipsDataset  # noqa: E402
from p3d.data.video import clear_index_cache  # noqa: E402

SIZE = (182, 242)  # the P3D input protocol's resize (paper Sec. 4.1)


def frames_codec(path: Path, mode: str) -> int:
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        st.thread_count = 1
        rf = av.video.reformatter.VideoReformatter()
        n = 0
        for f in c.decode(st):
            if mode == "to_ndarray":
                f.to_ndarray(width=SIZE[1], height=SIZE[0], format="rgb24", interpolation="BILINEAR")
            elif mode == "scaler":
                rf.reformat(f, width=SIZE[1], height=SIZE[0], format="rgb24", interpolation="BILINEAR").to_ndarray()
            n += 1
        return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/p3d_bench_decode")
    ap.add_argument(
        "--items-only",
        action="store_true",
        help="print only the extraction-item rates as JSON (to compare checkouts: PYTHONPATH=<src> per run)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = Sizes.for_device(torch.device("cpu"), tiny=False)
    sizes.unique_videos = args.videos
    work = Path(args.work)
    if args.items_only:
        rates = {}
        for codec in ("h264", "mpeg4"):
            paths = ensure_videos(sizes, work, codec)
            ds = VideoClipsDataset(video_list(paths, len(paths), work), sizes.spec, num_clips=20, raw=True)
            ds[0]
            c0 = time.process_time()
            for i in range(len(ds)):
                clear_index_cache()
                ds[i]
            rates[codec] = round(len(ds) * sizes.video_frames / (time.process_time() - c0))
        print(json.dumps(rates))
        return
    print("| codec | Mbit/s | codec alone | + to_ndarray (before) | + one scaler (now) | extraction item | clips/s |")
    print("|---|---|---|---|---|---|---|")
    for codec in ("h264", "mpeg4"):
        paths = ensure_videos(sizes, work, codec)
        ds = VideoClipsDataset(video_list(paths, len(paths), work), sizes.spec, num_clips=20, raw=True)
        rates: dict[str, list[float]] = {k: [] for k in ("codec", "to_ndarray", "scaler", "item")}
        for _ in range(args.rounds):
            for mode in rates:
                c0, n = time.process_time(), 0
                for i, p in enumerate(paths):
                    if mode == "item":
                        clear_index_cache()  # every video is opened and indexed once in a real run
                        ds[i]
                        n += sizes.video_frames
                    else:
                        n += frames_codec(p, mode)
                rates[mode].append(n / (time.process_time() - c0))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"| {codec} | {mbit_s(paths, sizes.video_frames):.2f} | {med['codec']:.0f} | {med['to_ndarray']:.0f} | "
            f"{med['scaler']:.0f} | {med['item']:.0f} | {med['item'] / sizes.video_frames * 20:.0f} |",
            flush=True,
        )
    print("\nframes/s per core (CPU time, 1 thread); clips/s = extraction items × 20 clips / 175 frames")


if __name__ == "__main__":
    main()
