"""Compute the optical flow of a dataset into flow files (``p3d flow SRC DST``).

Every RGB source under ``SRC`` (a video file or an ``img_00001.jpg`` frame folder, :mod:`p3d.data.sources`), or
every path of a list file / manifest, becomes ``DST/<same relative path>/<stem>.flow.mkv``
(:mod:`p3d.data.flowfile`): TV-L1 between consecutive frames (:func:`p3d.flow.compute_flow`, either engine),
quantised to uint8 images (:func:`p3d.flow.quantize_flow`, bound 20 px).  Frames are optionally resized first
(``size``, FFmpeg's bilinear swscale as in the clip pipeline: compute at the training resize, e.g. 182x242, so a
stored field and one computed on the fly from the same frames agree).  Frames are decoded and flow is written
``chunk`` frames at a time, so a long video never sits in memory.

The job is resumable (a finished ``.flow.mkv`` is skipped; files appear only once complete, so an interrupted run
leaves no half file under the final name) and robust (a video that cannot be read or is too short is reported
with the reason and the job goes on).  Other small files of a source folder (split lists, class index, CSV/JSON
annotations) are copied, so ``DST`` is a dataset root the parsers read as they read ``SRC``: a list entry
``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi`` resolves to ``DST/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.flow.mkv``.

Public API::

    flow_video(src, dst, size=None, engine="tvl1", bound=20.0, ...) -> int      # fields written
    flow_jobs(src, dst) -> [(source, destination)], [(other file, copy to)]
    flow_tree(src, dst, ..., workers=1, overwrite=False, progress=False) -> FlowReport
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np

from p3d.data.flowfile import FlowWriter
from p3d.data.sources import is_flow_file, list_sources, open_source
from p3d.data.video import FLOW_SUFFIX, VIDEO_EXTENSIONS, VideoReader
from p3d.errors import StorageError, VideoReadError

__all__ = ["FlowReport", "flow_jobs", "flow_tree", "flow_video"]

log = logging.getLogger(__name__)

# files copied next to the flow so that DST is a dataset root like SRC (splits, class lists, annotations)
_COPY_SUFFIXES = (".txt", ".csv", ".tsv", ".json", ".lst")
_COPY_MAX_BYTES = 64 << 20


def _frame_chunks(reader: Any, size: tuple[int, int] | None, chunk: int) -> Iterator[np.ndarray]:
    """The RGB frames of a source, ``(<=chunk, H, W, 3)`` uint8 at a time, in order."""
    if isinstance(reader, VideoReader):
        buf: list[np.ndarray] = []
        for img in reader.iter_frames(size=size):
            buf.append(img)
            if len(buf) == chunk:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)
        return
    for start in range(0, reader.num_frames, chunk):
        yield reader.get_frames(np.arange(start, min(start + chunk, reader.num_frames)), size=size)


def flow_video(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    engine: str = "tvl1",
    bound: float = 20.0,
    params: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    compile: bool = False,
    chunk: int = 32,
) -> int:
    """The flow file ``dst`` (``….flow.mkv``) of the RGB source ``src`` (video file or ``img_`` frame folder):
    field ``t`` is the flow from frame ``t`` to ``t + 1`` at ``size=(H, W)`` (default: the source's size).
    Returns the number of fields.  Raises :class:`VideoReadError` (unreadable, fewer than 2 frames) or
    :class:`StorageError`; ``dst`` appears only when complete."""
    from p3d.flow import compute_flow, quantize_flow

    if chunk < 2:
        raise ValueError(f"chunk must be >= 2 frames, got {chunk}")
    with open_source(src, "rgb") as reader:
        if reader.num_frames < 2:
            raise VideoReadError(src, f"optical flow needs at least 2 frames, the video has {reader.num_frames}")
        fps = reader.fps if isinstance(reader, VideoReader) else 25.0
        writer: FlowWriter | None = None
        prev: np.ndarray | None = None
        try:
            for frames in _frame_chunks(reader, size, chunk):
                if prev is not None:
                    frames = np.concatenate([prev, frames])
                prev = frames[-1:]
                if len(frames) < 2:
                    continue
                flow = compute_flow(frames, engine=engine, params=params, batch_size=batch_size, device=device,
                                    compile=compile)  # fmt: skip
                images = quantize_flow(flow, bound).permute(0, 2, 3, 1).cpu().numpy()  # (T, H, W, 2)
                if writer is None:
                    meta = {
                        "bound": bound,
                        "engine": engine,
                        "params": asdict(params) if params is not None else "defaults (OpenCV's)",
                        "size": list(images.shape[1:3]),
                        "source": Path(src).name,
                        "fields": "t: frame t -> frame t + 1",
                    }
                    writer = FlowWriter(dst, images.shape[1:3], fps=fps, meta=meta)
                writer.write(np.ascontiguousarray(images))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        if writer is None:
            raise VideoReadError(src, "optical flow needs at least 2 decodable frames")
        writer.close()
        return writer.count


def _destination(dst_root: Path, rel: Path) -> Path:
    name = rel.name if rel.suffix.lower() not in VIDEO_EXTENSIONS else rel.stem
    return dst_root / rel.parent / (name + FLOW_SUFFIX)


def flow_jobs(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> tuple[list[tuple[Path, Path]], list]:
    """What :func:`flow_tree` does: ``[(RGB source, flow file)]`` and ``[(other file, copy)]``.

    ``src`` is a folder (every video file and ``img_`` frame folder under it; flow files and flow-only folders are
    not sources) or a list file / manifest (:func:`p3d.data.samples_from_path`; outputs keep the path relative to
    the list's folder, or just the name for a path outside it)."""
    srcp, dstp = Path(src), Path(dst)
    copies: list[tuple[Path, Path]] = []
    if srcp.is_dir():
        if dstp.resolve() == srcp.resolve() or srcp.resolve() in dstp.resolve().parents:
            raise ValueError(f"{dstp}: the output folder must be outside the source folder {srcp}")
        base = srcp
        sources = [p for p in list_sources(srcp) if not is_flow_file(p)]
        sources = [p for p in sources if not p.is_dir() or _serves_rgb(p)]
        for dirpath, dirnames, filenames in os.walk(srcp):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                p = Path(dirpath, f)
                if p.suffix.lower() in _COPY_SUFFIXES and not f.startswith(".") and p.stat().st_size < _COPY_MAX_BYTES:
                    copies.append((p, dstp / p.relative_to(srcp)))
    elif srcp.is_file():
        from p3d.data import samples_from_path

        base = srcp.parent
        sources = [Path(s.path) for s in samples_from_path(srcp).samples]
    else:
        raise FileNotFoundError(f"{srcp}: no such folder or list file")
    jobs = []
    seen: set[Path] = set()
    for p in sources:
        try:
            rel = p.resolve().relative_to(base.resolve())
        except ValueError:
            rel = Path(p.name)
        out = _destination(dstp, rel)
        if out not in seen:
            seen.add(out)
            jobs.append((p, out))
    return jobs, copies


def _serves_rgb(path: Path) -> bool:
    """Whether a frame folder holds RGB frames (a flow-only folder is not a source of ``p3d flow``)."""
    from p3d.data.sources import scan_frame_folder

    try:
        return bool(scan_frame_folder(path).rgb)
    except VideoReadError:
        return True  # let the job report why it cannot be read


@dataclass
class FlowReport:
    """What :func:`flow_tree` did: flow files written (with their fields), kept, copied, failed with reasons."""

    written: int = 0
    fields: int = 0
    skipped_existing: int = 0
    copied: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def _job(args: tuple[Path, Path, dict[str, Any]]) -> tuple[str, int, str | None]:
    src, dst, kw = args
    import torch

    torch.set_num_threads(kw.pop("threads", 1))
    try:
        return str(src), flow_video(src, dst, **kw), None
    except (VideoReadError, StorageError) as e:
        return str(src), 0, getattr(e, "reason", str(e))
    except av.error.FFmpegError as e:
        return str(src), 0, f"FFmpeg error: {e}"
    except (ValueError, OSError, RuntimeError) as e:  # e.g. frames of changing size in a folder, out of memory
        return str(src), 0, f"{type(e).__name__}: {e}"


def flow_tree(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    size: tuple[int, int] | None = None,
    engine: str = "tvl1",
    bound: float = 20.0,
    params: Any = None,
    batch_size: int | None = None,
    device: str | None = None,
    compile: bool = False,
    chunk: int = 32,
    workers: int = 1,
    threads: int | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> FlowReport:
    """Flow files for every RGB source of ``src`` under ``dst`` (see the module docstring).  ``workers``
    processes, each on ``threads`` torch threads (default: the cores shared out), decoding ``chunk`` frames at a
    time; finished outputs are kept unless ``overwrite``."""
    from p3d.flow import ENGINES
    from p3d.flow.images import _check_bound

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    _check_bound(bound)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be two positive integers (H, W), got {size}")
    jobs, copies = flow_jobs(src, dst)
    report = FlowReport()
    for a, b in copies:
        b.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a, b)
        report.copied += 1
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    kw = {
        **{"size": tuple(size) if size else None, "engine": engine, "bound": bound, "params": params},
        **{"batch_size": batch_size, "device": device, "compile": compile, "chunk": chunk, "threads": threads},
    }
    todo = []
    for s, d in jobs:
        if d.exists() and not overwrite:
            report.skipped_existing += 1
        else:
            todo.append((s, d, dict(kw)))
    if workers > 1 and len(todo) > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            report = _collect(pool.imap_unordered(_job, todo), report, len(todo), progress)
    else:
        import torch

        before = torch.get_num_threads()
        try:
            report = _collect(map(_job, todo), report, len(todo), progress)
        finally:
            torch.set_num_threads(before)
    return report


def _collect(results, report: FlowReport, total: int, progress: bool) -> FlowReport:
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="video", desc="flow")
    every = max(1, total // 20)  # without a progress bar: a log line every 5 % of the videos
    for done, (src, n, reason) in enumerate(results, 1):
        if reason is None:
            report.written += 1
            report.fields += n
        else:
            report.failed.append((src, reason))
            log.warning("no flow for %s: %s", src, reason)
        if not progress and (done % every == 0 or done == total):
            log.info("flow: %d/%d videos done (%d failed)", done, total, len(report.failed))
    return report
