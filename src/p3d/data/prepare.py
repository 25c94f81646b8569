"""Rewrite a dataset for fast clip loading (``p3d prepare``).

Real-world files are slow to sample from for two reasons: a random clip must decode from the previous key
frame (H.264 from the web often has a key frame every 2-10 s), and large frames (720p and up) cost far
more to decode and scale than the 182x242 the model sees.  ``prepare_tree`` re-encodes every video under a
folder to H.264 at the training resolution with a short GOP (a key frame every ``gop`` frames), no
B-frames and x264's ``fastdecode`` tuning, rotation applied, one output frame per decoded input frame
(so frame indices and the clip sampling protocol are unchanged; timestamps become constant-rate at the
source's average rate).  Other files (split lists, CSV, JSON) are copied, so the dataset parsers work on
the output folder as on the input (they accept ``.mp4`` in place of another extension).

Public API::

    prepare_video(src, dst, size=(182, 242), gop=8, crf=18) -> int          # frames written
    prepare_tree(src_root, dst_root, ..., workers=1) -> PrepareReport
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

from p3d.data.video import VIDEO_EXTENSIONS, VideoReader
from p3d.errors import VideoReadError

log = logging.getLogger(__name__)


def prepare_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    size: tuple[int, int] = (182, 242),
    gop: int = 8,
    crf: int = 18,
) -> int:
    """Re-encode ``src`` to H.264 mp4 ``dst`` at ``size=(H, W)`` (even numbers); returns frames written.

    Raises :class:`VideoReadError` if ``src`` cannot be read or no frame decodes.
    """
    h, w = size
    if h % 2 or w % 2 or h < 2 or w < 2:
        raise ValueError(f"prepared size must be positive even numbers (H.264 4:2:0), got {h}x{w}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial.mp4")
    n = 0
    with VideoReader(src) as reader:
        rate = Fraction(reader.fps).limit_denominator(1001)
        with av.open(str(tmp), "w") as out:
            stream = out.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.thread_count = 1
            stream.codec_context.options = {
                "preset": "veryfast",
                "crf": str(crf),
                "g": str(gop),
                "keyint_min": str(gop),
                "bf": "0",
                "tune": "fastdecode",
                "x264-params": "scenecut=0",
            }
            for img in reader.iter_frames(size=size):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                frame.pts = n
                frame.time_base = 1 / rate
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
            for packet in stream.encode():
                out.mux(packet)
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise VideoReadError(src, "no frame could be decoded")
    tmp.replace(dst)
    return n


@dataclass
class PrepareReport:
    """What :func:`prepare_tree` did: videos converted, other files copied, failures with reasons."""

    converted: int = 0
    skipped_existing: int = 0
    copied: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def _job(args: tuple[str, str, tuple[int, int], int, int]) -> tuple[str, str | None]:
    src, dst, size, gop, crf = args
    try:
        prepare_video(src, dst, size=size, gop=gop, crf=crf)
    except VideoReadError as e:
        return src, e.reason
    except av.error.FFmpegError as e:
        return src, f"FFmpeg error while re-encoding: {e}"
    return src, None


def prepare_tree(
    src_root: str | os.PathLike[str],
    dst_root: str | os.PathLike[str],
    size: tuple[int, int] = (182, 242),
    gop: int = 8,
    crf: int = 18,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = False,
) -> PrepareReport:
    """Mirror ``src_root`` into ``dst_root``: videos re-encoded (``<stem>.mp4``), other files copied."""
    src_root, dst_root = Path(src_root), Path(dst_root)
    if not src_root.is_dir():
        raise FileNotFoundError(f"{src_root}: source folder not found")
    if dst_root.resolve() == src_root.resolve() or src_root.resolve() in dst_root.resolve().parents:
        raise ValueError(f"{dst_root}: the output folder must be outside the source folder")
    report = PrepareReport()
    jobs = []
    for p in sorted(src_root.rglob("*")):
        if not p.is_file():
            continue
        rel = p.relative_to(src_root)
        if p.suffix.lower() in VIDEO_EXTENSIONS:
            dst = (dst_root / rel).with_suffix(".mp4")
            if dst.exists() and not overwrite:
                report.skipped_existing += 1
                continue
            jobs.append((str(p), str(dst), tuple(size), gop, crf))
        else:
            (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst_root / rel)
            report.copied += 1
    if workers > 1 and len(jobs) > 1:
        with mp.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
            results = pool.imap_unordered(_job, jobs, chunksize=4)
            report = _collect(results, report, len(jobs), progress)
    else:
        report = _collect(map(_job, jobs), report, len(jobs), progress)
    return report


def _collect(results, report: PrepareReport, total: int, progress: bool) -> PrepareReport:
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="video")
    for src, reason in results:
        if reason is None:
            report.converted += 1
        else:
            report.failed.append((src, reason))
            log.warning("cannot prepare %s: %s", src, reason)
    return report
