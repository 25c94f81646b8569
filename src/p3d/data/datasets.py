"""Dataset lists (UCF101, Kinetics, ActivityNet, Sports-1M, folder, manifest) and torch Datasets of clips.

Every parser returns a :class:`SampleList`: ``samples`` (each a :class:`Sample` with the video path, label
indices, optional segment start/end in seconds and a video id) and ``classes`` (index -> name).

* ``ucf101``: ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0N.txt`` ("Class/v_x.avi 1", 1-based label),
  ``testlist0N.txt`` ("Class/v_x.avi", class from the folder name); CRLF endings are fine.
* ``kinetics``: CSV ``label,youtube_id,time_start,time_end,split``; files found by YouTube id anywhere under
  ``root`` (``<id>.mp4`` full videos get the segment, ``<id>_000010_000020.mp4`` trimmed clips do not).
* ``activitynet``: v1.3 JSON ``database -> id -> {subset, annotations: [{segment, label}]}``; one sample per
  video (multi-label) or, ``trimmed=True``, one per annotated segment; files ``v_<id>.*`` or ``<id>.*``.
* ``sports1m``: lines ``<url or path> <l1,l2,..>`` with 0-based labels; optional class-name file.
* ``folder``: ``root/<class>/<video>``; ``manifest``: CSV/TSV lines ``path,labels[,start,end]``, labels
  separated by ``;`` or ``|`` (names or 0-based ints), ``#`` comments, optional header.

Torch datasets:

* :class:`ClipDataset` (training): item ``i`` -> ``(clip (C, T, H, W) float32, label)``; ``label`` is an
  int, or a ``(num_classes,)`` float multi-hot vector for multi-label lists.  A file that fails is logged
  and skipped (another sample is drawn); :meth:`ClipDataset.collect_failures` gathers the failed files with
  their reasons from every DataLoader worker (each file once), ``num_skipped`` counts failed draws.
* :class:`VideoClipsDataset` (testing/extraction): ``flat=False`` -> item per video, ``clips`` is
  ``(N, C, T, H, W)``; ``flat=True`` -> item per (video, clip), ``clips`` is ``(C, T, H, W)``, so clips of
  many videos batch together.  Items are dicts with ``clips, label, video_index, clip_index, video_id,
  valid`` (``valid=False``: unreadable video, zero clips, logged and counted).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import os
import queue
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from torch.utils.data import Dataset

from p3d.data.flowclips import FlowFromRGB, flow_frame_indices
from p3d.data.sampling import (
    SHORT_POLICIES,
    clip_span,
    offset_to_segment,
    sample_test_clips,
    sample_train_clip,
)
from p3d.data.sources import list_sources, open_source, scan_frame_folder, source_modalities, source_stem
from p3d.data.transforms import ClipTransform, hflip, hflip_frames
from p3d.data.video import FLOW_SUFFIX, VIDEO_EXTENSIONS, VideoReader, normalize_id
from p3d.errors import VideoReadError, is_out_of_memory
from p3d.spec import InputSpec

log = logging.getLogger(__name__)

DATASET_KINDS = ("ucf101", "kinetics", "activitynet", "sports1m", "folder", "manifest")


@dataclass(frozen=True)
class Sample:
    """One labelled video (or segment of one): ``start``/``end`` in seconds from its first frame."""

    path: str
    labels: tuple[int, ...]
    video_id: str
    start: float | None = None
    end: float | None = None

    @property
    def label(self) -> int:
        """The first label (-1 when unlabelled, e.g. a test split without annotations)."""
        return self.labels[0] if self.labels else -1


@dataclass
class SampleList:
    """Samples plus class names; ``missing`` lists annotated videos whose file was not found."""

    samples: list[Sample]
    classes: list[str]
    multilabel: bool = False
    missing: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def union(self, *others: SampleList) -> SampleList:
        """These samples followed by those of ``others`` not already present (same path and segment); the class
        lists must agree."""
        seen = {(s.path, s.start, s.end) for s in self.samples}
        samples, missing = list(self.samples), list(self.missing)
        for o in others:
            if list(o.classes) != list(self.classes):
                raise ValueError(
                    f"cannot join sample lists with different classes ({len(o.classes)} vs {len(self.classes)})"
                )
            for s in o.samples:
                if (s.path, s.start, s.end) not in seen:
                    seen.add((s.path, s.start, s.end))
                    samples.append(s)
            missing += [m for m in o.missing if m not in missing]
        return SampleList(samples, list(self.classes), self.multilabel or any(o.multilabel for o in others), missing)

    def class_counts(self) -> dict[str, int]:
        counts = {c: 0 for c in self.classes}
        for s in self.samples:
            for label in s.labels:
                counts[self.classes[label]] += 1
        return counts


# ---------------------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------------------
def _lines(path: str | os.PathLike[str]) -> list[str]:
    """Non-empty stripped lines; CRLF/CR endings and a UTF-8 BOM are fine."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{p}: is a folder, expected an annotation file")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: annotation file not found")
    text = p.read_bytes().decode("utf-8-sig", errors="replace")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def _resolve(root: Path, rel: str) -> Path:
    """``root/rel``; if absent, the same stem with another video extension (e.g. after ``p3d prepare``), as a flow
    file (``<stem>.flow.mkv``, after ``p3d flow``) or as a frame folder (``<stem>/``, TSN/MMAction2 frames)."""
    p = root / rel
    if p.exists():
        return p
    for ext in (".mp4", *VIDEO_EXTENSIONS):
        q = p.with_suffix(ext)
        if q.exists():
            return q
    for q in (p.with_name(p.stem + FLOW_SUFFIX), p.with_suffix("")):
        if q.exists():
            return q
    return p


def _find_split_dir(root: Path, split_dir: str | os.PathLike[str] | None) -> Path:
    if split_dir is not None:
        d = Path(split_dir)
        if not (d / "classInd.txt").is_file():
            raise FileNotFoundError(f"{d}: no classInd.txt in the UCF101 split directory")
        return d
    for d in (root / "ucfTrainTestlist", root, root.parent / "ucfTrainTestlist", root / "splits"):
        if (d / "classInd.txt").is_file():
            return d
    raise FileNotFoundError(f"{root}: cannot find classInd.txt (looked in ucfTrainTestlist/, ./, ../ucfTrainTestlist/)")


def _find_video_root(root: Path) -> Path:
    for d in (root / "UCF-101", root / "UCF101", root / "videos", root):
        if d.is_dir():
            return d
    return root


def parse_ucf101(
    root: str | os.PathLike[str],
    split: int = 1,
    subset: str = "train",
    split_dir: str | os.PathLike[str] | None = None,
) -> SampleList:
    """UCF101 official split ``split`` (1..3), ``subset`` "train" or "test".

    ``root`` holds the videos (``root/UCF-101/<Class>/...`` or ``root/<Class>/...``) and, unless
    ``split_dir`` is given, the split files in ``root/ucfTrainTestlist``.  The label of a test entry comes
    from its folder name; for train entries it must agree with the 1-based label in the file.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"UCF101 subset must be 'train' or 'test', got {subset!r}")
    root = Path(root)
    sdir = _find_split_dir(root, split_dir)
    classes: list[str] = []
    for n, line in enumerate(_lines(sdir / "classInd.txt"), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise ValueError(f"{sdir / 'classInd.txt'}:{n}: expected '<index> <ClassName>' in order, got {line!r}")
        classes.append(parts[1])
    by_name = {c.lower(): i for i, c in enumerate(classes)}
    vroot = _find_video_root(root)
    list_file = sdir / f"{subset}list{split:02d}.txt"
    samples: list[Sample] = []
    missing: list[str] = []
    for n, line in enumerate(_lines(list_file), 1):
        parts = line.split()
        rel = parts[0].replace("\\", "/")
        folder = rel.split("/")[0]
        if folder.lower() not in by_name:
            raise ValueError(f"{list_file}:{n}: class folder {folder!r} not in classInd.txt")
        label = by_name[folder.lower()]
        if len(parts) > 1:
            if int(parts[1]) - 1 != label:
                raise ValueError(
                    f"{list_file}:{n}: label {parts[1]} disagrees with folder {folder!r} (classInd gives {label + 1})"
                )
        path = _resolve(vroot, rel)
        if not path.exists():
            missing.append(str(path))
            continue
        samples.append(Sample(str(path), (label,), Path(rel).stem))
    return SampleList(samples, classes, missing=missing)


_YTID_TRIMMED = re.compile(r"^(?P<id>[A-Za-z0-9_-]{11})_(?P<start>\d{6})_(?P<end>\d{6})$")


def _index_files(root: Path, strip_prefix: str = "") -> dict[str, tuple[Path, bool]]:
    """Map video id -> (path, already trimmed) for every video file under ``root``."""
    out: dict[str, tuple[Path, bool]] = {}
    for p in list_sources(root):
        stem = source_stem(p)
        m = _YTID_TRIMMED.match(stem)
        if m:
            out.setdefault(m["id"], (p, True))
            continue
        if strip_prefix and stem.startswith(strip_prefix):
            stem = stem[len(strip_prefix) :]
        out.setdefault(stem, (p, False))
    return out


def parse_kinetics(
    csv_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    split: str | None = None,
    classes: Sequence[str] | None = None,
) -> SampleList:
    """Kinetics CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``) rows of ``split`` (all if None).

    Class indices follow ``classes`` if given, else the sorted label names of the whole CSV (so train and
    val lists agree).  Rows without a local file are listed in ``missing``.
    """
    rows = list(csv.DictReader(io.StringIO("\n".join(_lines(csv_path)))))
    need = {"label", "youtube_id", "time_start", "time_end"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(
            f"{csv_path}: expected CSV columns {sorted(need)} (+ split), got {list(rows[0]) if rows else []}"
        )
    names = list(classes) if classes is not None else sorted({r["label"] for r in rows if r.get("label")})
    by_name = {c: i for i, c in enumerate(names)}
    files = _index_files(Path(root))
    samples: list[Sample] = []
    missing: list[str] = []
    for r in rows:
        if split is not None and r.get("split", split) != split:
            continue
        yid = r["youtube_id"]
        label = r.get("label") or ""
        if label and label not in by_name:
            raise ValueError(f"{csv_path}: label {label!r} of {yid} not among the {len(names)} classes")
        found = files.get(yid)
        if found is None:
            missing.append(yid)
            continue
        path, trimmed = found
        start, end = (None, None) if trimmed else (float(r["time_start"]), float(r["time_end"]))
        labels = (by_name[label],) if label else ()
        samples.append(Sample(str(path), labels, f"{yid}_{int(float(r['time_start'])):06d}", start, end))
    return SampleList(samples, names, missing=missing)


def parse_activitynet(
    json_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    subset: str = "training",
    trimmed: bool = False,
) -> SampleList:
    """ActivityNet v1.3 JSON, videos of ``subset`` ("training", "validation", "testing").

    ``trimmed=False``: one sample per video, labels = its annotated classes (multi-label);
    ``trimmed=True``: one sample per annotated segment with its start/end.  Classes: sorted label names.
    """
    p = Path(json_path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: annotation file not found")
    try:
        db = json.loads(p.read_text(encoding="utf-8"))["database"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{p}: not an ActivityNet JSON with a 'database' object ({e})") from None
    names = sorted({a["label"] for v in db.values() for a in v.get("annotations", [])})
    by_name = {c: i for i, c in enumerate(names)}
    files = _index_files(Path(root), strip_prefix="v_")
    samples: list[Sample] = []
    missing: list[str] = []
    for vid, v in sorted(db.items()):
        if v.get("subset") != subset:
            continue
        found = files.get(vid)
        if found is None:
            missing.append(vid)
            continue
        path = str(found[0])
        anns = v.get("annotations", [])
        if trimmed:
            for k, a in enumerate(anns):
                s, e = (float(x) for x in a["segment"])
                samples.append(Sample(path, (by_name[a["label"]],), f"{vid}#{k}", s, e))
        else:
            labels = tuple(sorted({by_name[a["label"]] for a in anns}))
            samples.append(Sample(path, labels, vid))
    multilabel = not trimmed and any(len(s.labels) > 1 for s in samples)
    return SampleList(samples, names, multilabel=multilabel, missing=missing)


def parse_sports1m(
    list_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    class_names: str | os.PathLike[str] | None = None,
) -> SampleList:
    """Sports-1M partition lines ``<youtube url | id | relative path> <l1,l2,...>`` (0-based labels).

    Files are found by YouTube id under ``root`` (or as the given relative path).  Class names come from
    ``class_names`` (one per line) or are the label numbers.
    """
    rootp = Path(root)
    files = _index_files(rootp)
    entries: list[tuple[str, tuple[int, ...]]] = []
    for n, line in enumerate(_lines(list_path), 1):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{list_path}:{n}: expected '<url or path> <labels>', got {line!r}")
        try:
            labels = tuple(int(x) for x in parts[1].split(",") if x)
        except ValueError:
            raise ValueError(f"{list_path}:{n}: labels must be comma-separated integers, got {parts[1]!r}") from None
        entries.append((parts[0], labels))
    if class_names is not None:
        names = _lines(class_names)
    else:
        names = [str(i) for i in range(max((max(e[1]) for e in entries if e[1]), default=-1) + 1)]
    samples: list[Sample] = []
    missing: list[str] = []
    for ref, labels in entries:
        if any(lab >= len(names) or lab < 0 for lab in labels):
            raise ValueError(f"{list_path}: label out of range [0, {len(names)}) in {ref} {labels}")
        m = re.search(r"[?&]v=([A-Za-z0-9_-]{11})", ref)
        vid = m.group(1) if m else Path(ref).stem
        found = files.get(vid)
        path = found[0] if found else _resolve(rootp, ref) if not m else None
        if path is None or not Path(path).exists():
            missing.append(ref)
            continue
        samples.append(Sample(str(path), labels, vid))
    multilabel = any(len(s.labels) > 1 for s in samples)
    return SampleList(samples, names, multilabel=multilabel, missing=missing)


def parse_folder(root: str | os.PathLike[str]) -> SampleList:
    """``root/<class>/**/<video>``: one class per sub-folder (sorted names -> indices 0..).  A video may be a flow
    file or a frame folder (:func:`p3d.data.sources.list_sources`)."""
    rootp = Path(root)
    if not rootp.is_dir():
        raise FileNotFoundError(f"{rootp}: dataset folder not found")
    classes = sorted(d.name for d in rootp.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = [Sample(str(p), (i,), source_stem(p)) for i, c in enumerate(classes) for p in list_sources(rootp / c)]
    if not samples:
        raise ValueError(f"{rootp}: no videos found in class sub-folders")
    return SampleList(samples, classes)


def parse_manifest(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> SampleList:
    """A simple list: ``path<sep>labels[<sep>start<sep>end[<sep>video_id]]`` with ``sep`` tab or comma.

    Labels are class names or 0-based ints, several separated by ``;`` or ``|``.  Relative paths are taken
    from ``root`` (default: the manifest's folder).  A header line starting with ``path`` is skipped.
    Class names: ``classes``, else a ``classes.txt`` next to the manifest, else sorted names / numbers.
    """
    mpath = Path(path)
    base = Path(root) if root is not None else mpath.parent
    rows: list[tuple[str, list[str], float | None, float | None, str | None]] = []
    for n, line in enumerate(_lines(mpath), 1):
        if line.startswith("#"):
            continue
        parts = next(csv.reader([line], delimiter="\t" if "\t" in line else ","))
        parts = [p.strip() for p in parts]
        if n == 1 and parts[0].lower() == "path":
            continue
        if len(parts) < 2:
            raise ValueError(f"{mpath}:{n}: expected 'path,labels[,start,end]', got {line!r}")
        try:
            start = float(parts[2]) if len(parts) > 2 and parts[2] else None
            end = float(parts[3]) if len(parts) > 3 and parts[3] else None
        except ValueError:
            raise ValueError(f"{mpath}:{n}: start/end must be seconds, got {parts[2:4]}") from None
        labels = [x.strip() for x in re.split(r"[;|]", parts[1]) if x.strip()]
        rows.append((parts[0], labels, start, end, parts[4] if len(parts) > 4 and parts[4] else None))
    if classes is None and (mpath.parent / "classes.txt").is_file():
        classes = _lines(mpath.parent / "classes.txt")
    all_labels = {lab for r in rows for lab in r[1]}
    numeric = all(lab.lstrip("-").isdigit() for lab in all_labels)
    if classes is not None:
        names = list(classes)
    elif numeric:
        names = [str(i) for i in range(max((int(x) for x in all_labels), default=-1) + 1)]
    else:
        names = sorted(all_labels)
    by_name = {c: i for i, c in enumerate(names)}
    samples: list[Sample] = []
    for rel, labels, start, end, vid in rows:
        idx: list[int] = []
        for lab in labels:
            if lab in by_name:
                idx.append(by_name[lab])
            elif lab.lstrip("-").isdigit() and 0 <= int(lab) < len(names):
                idx.append(int(lab))
            else:
                raise ValueError(f"{mpath}: label {lab!r} of {rel} is not one of the {len(names)} classes")
        p = Path(rel) if Path(rel).is_absolute() else base / rel
        samples.append(Sample(str(p), tuple(idx), vid or source_stem(rel), start, end))
    multilabel = any(len(s.labels) > 1 for s in samples)
    return SampleList(samples, names, multilabel=multilabel)


def write_manifest(
    samples: SampleList | Sequence[Sample], path: str | os.PathLike[str], classes: Sequence[str] | None = None
) -> None:
    """Write ``samples`` as a manifest readable by :func:`parse_manifest` (plus ``classes.txt``)."""
    if isinstance(samples, SampleList):
        classes = samples.classes if classes is None else classes
        samples = samples.samples
    from p3d.fileio import atomic_write_text

    p = Path(path)
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["path", "labels", "start", "end", "video_id"])
    for s in samples:
        labels = ";".join(classes[i] for i in s.labels) if classes is not None else ";".join(map(str, s.labels))
        w.writerow([s.path, labels, "" if s.start is None else s.start, "" if s.end is None else s.end, s.video_id])
    atomic_write_text(p, buf.getvalue())
    if classes is not None:
        atomic_write_text(p.parent / "classes.txt", "".join(f"{c}\n" for c in classes))


def build_samples(
    kind: str,
    root: str | os.PathLike[str],
    *,
    annotations: str | os.PathLike[str] | None = None,
    split: int | str | None = None,
    subset: str | None = None,
    trimmed: bool = False,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
) -> SampleList:
    """One entry point for every dataset kind (see the module docstring for the formats).

    ``ucf101``: ``root`` = dataset folder, ``split`` 1..3 (default 1), ``subset`` train/test (default train),
    ``annotations`` = split folder (optional).  ``kinetics``: ``annotations`` = CSV, ``split`` = value of the
    split column (e.g. "train").  ``activitynet``: ``annotations`` = JSON, ``subset`` training/validation/
    testing, ``trimmed``.  ``sports1m``: ``annotations`` = partition list, ``classes`` = names file.
    ``folder``: ``root``.  ``manifest``: ``root`` = manifest file (or ``annotations`` with ``root`` as base).
    """
    if kind == "ucf101":
        if split is not None and not str(split).strip().isdigit():
            raise ValueError(f"UCF101 split must be 1, 2 or 3, got {split!r}")
        return parse_ucf101(root, int(split or 1), subset or "train", split_dir=annotations)
    if kind == "kinetics":
        if annotations is None:
            raise ValueError("kinetics needs annotations=<the CSV file>")
        names = _lines(classes) if isinstance(classes, (str, os.PathLike)) else classes
        return parse_kinetics(annotations, root, None if split is None else str(split), classes=names)
    if kind == "activitynet":
        if annotations is None:
            raise ValueError("activitynet needs annotations=<the v1.3 JSON file>")
        return parse_activitynet(annotations, root, subset or "training", trimmed=trimmed)
    if kind == "sports1m":
        if annotations is None:
            raise ValueError("sports1m needs annotations=<the partition list>")
        if classes is not None and not isinstance(classes, (str, os.PathLike)):
            raise ValueError("sports1m takes classes as a file of names")
        return parse_sports1m(annotations, root, class_names=classes)
    if kind == "folder":
        return parse_folder(root)
    if kind == "manifest":
        names = _lines(classes) if isinstance(classes, (str, os.PathLike)) else classes
        if annotations is not None:
            return parse_manifest(annotations, root, classes=names)
        return parse_manifest(root, classes=names)
    raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")


def samples_from_path(path: str | os.PathLike[str]) -> SampleList:
    """A folder, a video file or a list file as samples.  A video may also be a flow file or a frame folder
    (:mod:`p3d.data.sources`).

    * a folder with class sub-folders holding videos: labelled by folder (:func:`parse_folder`);
    * a frame folder (``img_00001.jpg`` / ``flow_x_00001.jpg`` ...): that one video, unlabelled;
    * any other folder: every video under it, unlabelled;
    * a video file (by its extension, or any file that is not text): that one video, unlabelled;
    * a ``.csv``/``.tsv`` manifest: :func:`parse_manifest`;
    * any other file: one video per line, ``<path> [<label>]``, relative paths from the file's folder;
      integer labels are class numbers, other tokens class names (sorted into numbers).
    """
    p = Path(path)
    if p.is_dir():
        if scan_frame_folder(p).modalities:
            return SampleList([Sample(str(p), (), p.name)], [])
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        videos = list_sources(p)
        loose = [v for v in videos if v.parent == p]
        if subdirs and not loose and all(list_sources(d) for d in subdirs):
            return parse_folder(p)
        if not videos:
            raise ValueError(f"{p}: no video files found")
        return SampleList([Sample(str(v), (), source_stem(v)) for v in videos], [])
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such folder or list file")
    if p.suffix.lower() in (".csv", ".tsv"):
        return parse_manifest(p)
    single = SampleList([Sample(str(p), (), source_stem(p))], [])
    if p.suffix.lower() in VIDEO_EXTENSIONS:
        return single
    try:
        text = p.read_text()
    except UnicodeDecodeError:  # binary: a video whatever its name; an unreadable one is reported as such later
        return single
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) > 2:
            raise ValueError(f"{p}: line {n}: expected '<video path> [<label>]'")
        v = Path(parts[0])
        v = _resolve(p.parent, parts[0]) if not v.is_absolute() else v  # also after `p3d prepare` / `p3d flow`
        rows.append((v, parts[1] if len(parts) == 2 else None))
    if not rows:
        raise ValueError(f"{p}: empty video list")
    tokens = sorted({t for _, t in rows if t is not None})
    numeric = all(t.lstrip("-").isdigit() for t in tokens)
    names = [] if numeric else tokens
    samples = []
    for v, t in rows:
        lab = () if t is None else ((int(t),) if numeric else (names.index(t),))
        samples.append(Sample(str(v), lab, source_stem(v)))
    return SampleList(samples, names)


def video_ids(samples: Sequence[Sample]) -> list[str]:
    """Feature ids of ``samples``: path relative to the samples' common folder, without extension.

    UCF101 samples get ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01``, exactly what its split lists say (see
    :func:`p3d.data.video.normalize_id`).  Segments of one file (ActivityNet trimmed) or paths that do
    not give unique ids use the dataset's ``video_id`` instead.
    """
    if not samples:
        return []
    segments = any(s.start is not None or s.end is not None for s in samples)
    if not segments:
        paths = [os.path.abspath(s.path) for s in samples]
        base = os.path.commonpath([os.path.dirname(q) for q in paths])
        ids = [normalize_id(os.path.relpath(q, base)) for q in paths]
        if len(set(ids)) == len(ids):
            return ids
    ids = [s.video_id for s in samples]
    if len(set(ids)) != len(ids):
        from collections import Counter

        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"video ids are not unique (e.g. {dup!r}); give a manifest with a video_id column")
    return ids


# ---------------------------------------------------------------------------------------------------------
# Torch datasets
# ---------------------------------------------------------------------------------------------------------
def _segment_frames(reader: VideoReader, sample: Sample) -> tuple[int, int]:
    if sample.start is None and sample.end is None:
        return 0, reader.num_frames
    return reader.frame_range(sample.start, sample.end)


def input_modality(spec: InputSpec) -> str:
    """What a model of ``spec`` reads: ``"flow"`` for two-channel optical flow (``XY``), else ``"rgb"``."""
    return "flow" if spec.channel_order == "XY" else "rgb"


def _check_first_source(samples: Sequence[Sample], modality: str, what: str) -> None:
    """Fail fast when the first sample (if it exists) cannot serve ``modality`` at all: a whole list of RGB videos
    given to a flow model, or flow given to an RGB model, is a setup error, not a run of unreadable videos."""
    if not samples:
        return
    path = samples[0].path
    have = source_modalities(path)
    if have and modality not in have:
        if modality == "flow":
            raise ValueError(
                f"{path}: an RGB video, but {what} reads optical flow: compute it with `p3d flow` (or, in test, "
                f"extract and predict, from the frames with --flow-from-rgb)"
            )
        raise ValueError(f"{path}: optical flow, but {what} reads RGB frames (an RGB model given a flow root?)")


def target(s: Sample, num_classes: int, multilabel: bool) -> int | torch.Tensor:
    """The training target of ``s``: its class number, or a ``(num_classes,)`` multi-hot float vector for
    multi-label lists (-1 for an unlabelled single-label sample)."""
    if not multilabel:
        return s.label
    y = torch.zeros(num_classes, dtype=torch.float32)
    y[list(s.labels)] = 1.0
    return y


def _as_samples(samples: SampleList | Sequence[Sample]) -> tuple[list[Sample], int, bool]:
    if isinstance(samples, SampleList):
        return list(samples.samples), samples.num_classes, samples.multilabel
    items = list(samples)
    n = max((max(s.labels) for s in items if s.labels), default=-1) + 1
    return items, n, any(len(s.labels) > 1 for s in items)


class ClipDataset(Dataset):
    """Training clips: item ``i`` -> ``(clip, label)``, one random clip of sample ``i`` per call.

    ``clip`` is ``(C, T, H, W)`` float32 as ``spec`` expects (``T = spec.clip_len`` frames every
    ``spec.frame_stride``; random crop, plus a random horizontal flip unless ``flip=False``, e.g. for classes
    that a mirror would swap, such as left/right motion).  A flow ``spec`` (``XY``) reads stored flow — flow files
    or flow frame folders (:mod:`p3d.data.sources`) — and its flip also negates x.  ``label`` is an int
    (multi-hot ``(num_classes,)`` float for multi-label lists).  Randomness is a pure function of
    ``(seed, epoch, i, attempt)``: call :meth:`set_epoch` each epoch.  A failing file is logged, reported
    (:meth:`collect_failures`) and replaced by another random sample (up to ``max_retries`` draws; then
    ``RuntimeError``).
    """

    def __init__(
        self,
        samples: SampleList | Sequence[Sample],
        spec: InputSpec,
        *,
        seed: int = 0,
        short_policy: str = "loop",
        max_retries: int = 50,
        threads: int = 1,
        flip: bool = True,
    ) -> None:
        if short_policy not in SHORT_POLICIES:
            raise ValueError(f"short_policy must be one of {SHORT_POLICIES}, got {short_policy!r}")
        self.samples, self.num_classes, self.multilabel = _as_samples(samples)
        if not self.samples:
            raise ValueError("ClipDataset needs at least one sample")
        self.spec = spec
        self.modality = input_modality(spec)
        _check_first_source(self.samples, self.modality, "the model")
        self.transform = ClipTransform(spec, train=True, flip=flip)
        self.seed = int(seed)
        self.epoch = 0
        self.short_policy = short_policy
        self.max_retries = max_retries
        self.threads = threads
        # Failures travel from the DataLoader workers to the main process: a shared count of failed draws, and a
        # queue of (path, reason) that collect_failures() drains into `failed`.
        self._skipped = mp.get_context().Value("i", 0)
        self._reports = mp.get_context().Queue()
        self._received = 0
        self.failed: dict[str, str] = {}  # path -> reason: every unreadable file once

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def num_skipped(self) -> int:
        """Failed draws so far, summed over all DataLoader workers (a file drawn twice counts twice; the distinct
        files are :meth:`collect_failures`)."""
        return int(self._skipped.value)

    def collect_failures(self, timeout: float = 0.0) -> dict[str, str]:
        """Every unreadable file met so far in this process or any DataLoader worker: path -> reason.

        Reports reach the main process through a queue, a moment after the draw that failed; with ``timeout`` > 0
        this waits (at most that long) until every failed draw counted so far is reported, e.g. before the counts
        are written into a checkpoint."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                if self._received < self.num_skipped and remaining > 0:
                    path, reason = self._reports.get(timeout=remaining)
                else:
                    path, reason = self._reports.get_nowait()
            except queue.Empty:
                break
            self._received += 1
            self.failed.setdefault(path, reason)
        return dict(self.failed)

    def load_clip(self, s: Sample, rng: np.random.Generator) -> torch.Tensor:
        """One random clip of ``s``: ``(C, T, H, W)`` float32.  Raises VideoReadError."""
        with open_source(s.path, self.modality, threads=self.threads) as r:
            a, b = _segment_frames(r, s)
            idx = sample_train_clip(b - a, self.spec.clip_len, self.spec.frame_stride, rng, self.short_policy)
            frames = r.get_frames(offset_to_segment(idx, (a, b)), size=self.transform.decode_size)
        return self.transform(frames, rng)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        j = int(i)
        for attempt in range(self.max_retries + 1):
            rng = np.random.default_rng([self.seed, self.epoch, int(i), attempt])
            s = self.samples[j]
            try:
                return self.load_clip(s, rng), target(s, self.num_classes, self.multilabel)
            except (VideoReadError, av.error.FFmpegError) as e:
                reason = e.reason if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"
                with self._skipped.get_lock():
                    self._skipped.value += 1
                self._reports.put((s.path, reason))
                self.failed.setdefault(s.path, reason)
                log.warning("skipping unreadable video %s: %s", s.path, reason)
                j = int(rng.integers(len(self.samples)))
        raise RuntimeError(
            f"{self.max_retries + 1} consecutive unreadable videos starting from item {i}; is the dataset readable?"
        )


class VideoClipsDataset(Dataset):
    """All ``num_clips`` test clips of each video (paper: 20 uniformly spread, centre crop).

    ``flat=False``: item = one video, ``clips`` ``(num_clips, C, T, H, W)`` (with ``flip``: followed by their
    horizontal mirrors, ``2·num_clips`` rows; see :func:`p3d.data.transforms.hflip_frames`).  ``flat=True``: item
    = one clip, index ``video * num_clips + k``, ``clips`` ``(C, T, H, W)``.  ``raw=True``: clips stay uint8
    frames ``(..., T, H, W, 3)`` (flow: ``(..., T, H, W, 2)`` images; resized and centre-cropped), to be normalised
    on the model's device with :func:`p3d.data.transforms.to_model_input` — what the test and extraction pipelines
    do.  A flow ``spec`` (``XY``) reads stored flow, or, with ``flow_from_rgb=True``, the RGB frames each flow field
    needs: ``(..., 2T, H', W', 3)`` uint8 at ``spec.resize``, uncropped, frames ``2t`` and ``2t + 1`` the pair of
    field ``t`` (:func:`p3d.data.flowclips.flow_frame_indices`), turned into the flow clip on the model's device
    by :class:`p3d.data.flowclips.FlowFromRGB`.  Clips are sampled over the ``n - 1`` flow fields of an
    ``n``-frame video either way, so both give the same fields.  Items are dicts
    ``{clips, label, video_index, clip_index, video_id, valid, error}``; a video that cannot be read gives zero
    clips with ``valid=False`` and the reason in ``error`` (logged; ``num_failed`` counts them across workers) —
    one bad file never stops a run.  Decoding all clips of a video at once (``flat=False``) is cheaper than one clip
    per item.
    """

    def __init__(
        self,
        samples: SampleList | Sequence[Sample],
        spec: InputSpec,
        *,
        num_clips: int = 20,
        flat: bool = False,
        flip: bool = False,
        raw: bool = False,
        short_policy: str = "loop",
        threads: int = 1,
        flow_from_rgb: bool | FlowFromRGB = False,
    ) -> None:
        if num_clips < 1:
            raise ValueError(f"num_clips must be >= 1, got {num_clips}")
        if flip and flat:
            raise ValueError("flip (mirrored copies of every clip) needs flat=False")
        self.modality = input_modality(spec)
        if flow_from_rgb:
            if self.modality != "flow":
                raise ValueError("flow_from_rgb needs a flow input spec (channel_order 'XY')")
            if not raw or flip:
                raise ValueError("flow_from_rgb needs raw=True and flip=False (flow is computed on the model's "
                                 "device from the RGB frames the dataset ships)")  # fmt: skip
        # how flow is computed from the frames, on the model's device (FlowFromRGB.model_input): None for stored input
        self.flow: FlowFromRGB | None = (
            (flow_from_rgb if isinstance(flow_from_rgb, FlowFromRGB) else FlowFromRGB()) if flow_from_rgb else None
        )
        self.flow_from_rgb = self.flow is not None
        self.samples, self.num_classes, self.multilabel = _as_samples(samples)
        _check_first_source(self.samples, self.read_modality, "flow_from_rgb" if flow_from_rgb else "the model")
        self.spec = spec
        self.transform = ClipTransform(spec, train=False)
        self.num_clips = num_clips
        self.flat = flat
        self.flip = flip
        self.raw = raw
        self.short_policy = short_policy
        self.threads = threads
        self._failed = mp.get_context().Value("i", 0)

    def __len__(self) -> int:
        return len(self.samples) * (self.num_clips if self.flat else 1)

    @property
    def read_modality(self) -> str:
        """What is read from the sample paths: ``"rgb"`` frames (RGB models, and flow computed from the frames) or
        stored ``"flow"``."""
        return "rgb" if self.flow_from_rgb else self.modality

    @property
    def clip_shape(self) -> tuple[int, ...]:
        """Shape of one clip as items hold it: ``(T, H, W, 3)`` uint8 when ``raw`` (flow: ``(T, H, W, 2)``; flow from
        RGB: ``(2T, H', W', 3)`` at ``spec.resize``), else ``(C, T, H, W)``."""
        (h, w), t = self.spec.size, self.spec.clip_len
        if self.flow_from_rgb:
            return (2 * t, *self.spec.resize, 3)
        if self.raw:
            return (t, h, w, 2 if self.modality == "flow" else 3)
        return (self.spec.channels, t, h, w)

    @property
    def num_failed(self) -> int:
        return int(self._failed.value)

    def clip_indices(self, reader: VideoReader, s: Sample) -> np.ndarray:
        """``(num_clips, clip_len)`` absolute frame indices of the test clips of ``s`` (flow from RGB: indices of
        flow fields, the ``n - 1`` fields of the segment's frames)."""
        a, b = _segment_frames(reader, s)
        if self.flow_from_rgb:
            b = min(b, reader.num_frames - 1)  # field f needs frames f and f + 1
            if b <= a:
                raise VideoReadError(s.path, "optical flow needs at least 2 frames, the video (segment) has 1")
        idx = sample_test_clips(b - a, self.num_clips, self.spec.clip_len, self.spec.frame_stride, self.short_policy)
        return offset_to_segment(idx, (a, b))

    def _clips(self, s: Sample, k: int) -> torch.Tensor:
        if not os.path.exists(s.path):
            raise VideoReadError(s.path, "file not found")
        with open_source(s.path, self.read_modality, threads=self.threads) as r:
            idx = self.clip_indices(r, s)
            if self.flow_from_rgb:  # whole frames at spec.resize: the flow is computed, then cropped, on the device
                frames = r.get_frames(flow_frame_indices(idx[k] if self.flat else idx), size=self.transform.decode_size)
                return torch.from_numpy(frames if self.flat else frames.reshape(self.num_clips, *self.clip_shape))
            want = idx[k] if self.flat else idx.reshape(-1)
            if self.raw:
                # test clips overlap (20 × 16 frames of a ~180-frame video): crop each decoded frame once and gather
                # the clips straight into their final array (one copy instead of three)
                uniq, inverse = np.unique(want, return_inverse=True)
                frames = self.transform.crop_flip(r.get_frames(uniq, size=self.transform.decode_size))
                out = torch.empty((len(want), *frames.shape[1:]), dtype=torch.uint8)
                dst = out.numpy()
                for j, u in enumerate(inverse.reshape(-1).tolist()):  # row copies: faster than fancy indexing
                    dst[j] = frames[u]
                clips = out if self.flat else out.view(self.num_clips, self.spec.clip_len, *out.shape[1:])
                return clips if not self.flip else torch.cat([clips, hflip_frames(clips, self.spec)])
            frames = r.get_frames(want, size=self.transform.decode_size)
        if self.flat:
            return self.transform(frames)
        frames = frames.reshape(self.num_clips, self.spec.clip_len, *frames.shape[1:])
        clips = torch.stack([self.transform(f) for f in frames])
        return torch.cat([clips, hflip(clips, self.spec)]) if self.flip else clips

    def model_input_fn(self):
        """The device-side step from the uint8 clips this dataset ships (``raw=True``) to the model's input:
        :func:`~p3d.data.transforms.to_model_input`, or flow computed from RGB frame pairs (``flow_from_rgb``)."""
        from p3d.data.flowclips import model_input_fn

        return model_input_fn(self.spec, self.flow)

    def __getitem__(self, i: int) -> dict[str, Any]:
        v, k = divmod(int(i), self.num_clips) if self.flat else (int(i), -1)
        s = self.samples[v]
        error = None
        try:
            clips = self._clips(s, k)
        except Exception as e:  # noqa: BLE001 - any failure of one video is reported, never fatal to the run
            if is_out_of_memory(e):  # says nothing about the video: the run itself cannot go on
                raise
            with self._failed.get_lock():
                self._failed.value += 1
            error = e.reason if isinstance(e, VideoReadError) else f"{type(e).__name__}: {e}"
            log.warning("unreadable video %s: %s", s.path, error)
            n = self.num_clips * (2 if self.flip else 1)
            shape = self.clip_shape if self.flat else (n, *self.clip_shape)
            clips = torch.zeros(shape, dtype=torch.uint8 if self.raw else torch.float32)
        return {
            "clips": clips,
            "label": target(s, self.num_classes, self.multilabel),
            "video_index": v,
            "clip_index": k,
            "video_id": s.video_id,
            "valid": error is None,
            "error": error or "",
        }


def train_span(spec: InputSpec) -> int:
    """Frames one training clip of ``spec`` covers."""
    return clip_span(spec.clip_len, spec.frame_stride)
