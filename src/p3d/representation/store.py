"""Representation files: written by ``p3d extract``, read by ``p3d svm`` / ``similarity`` / ``embed``.

Format (version 1): **safetensors parts plus a JSON header**, one directory per extraction run::

    features/                        # a "feature store"
      meta.json                      # model, layers, InputSpec, clips per video, flip, class names ...
      part-r0000-000000.safetensors  # a chunk of videos written by rank 0
      part-r0001-000000.safetensors  # ... by rank 1 (torchrun)
      part-r0000-000001.safetensors

Each part is a plain safetensors file.  Its tensors are ``video.<layer>`` ``(n, D_layer)`` float32 (the
video-level descriptor: mean of the clip descriptors, Sec. 5 of the paper), optionally ``clip.<layer>``
``(m, D_layer)`` with ``clip_video`` ``(m,)`` int64 (row of ``video.*`` each clip belongs to) and
``clip_index`` ``(m,)`` int64 (which test clip of that video).  Its string metadata holds ``format``,
``version``, ``meta`` (the same JSON as ``meta.json``), ``ids`` (JSON list, the rows of ``video.*``),
``labels`` (JSON list of int or null: the first label of each video), ``multi_labels`` (JSON list of lists of
int: all labels of each video, e.g. ActivityNet untrimmed or Sports-1M; written only by parts holding a video
with more than one label, so single-label stores and readers older than the key are unchanged) and ``bad``
(JSON object ``{video id: reason}``).  ``p3d merge-features`` writes the whole store as one part-shaped file,
so a merged ``.safetensors`` file and a directory are read by the same :func:`read_features`.

**Dense stores** (``p3d extract --dense``, :mod:`p3d.representation.dense`): the clip rows are the windows along
each video, in time order (``clip_index`` = window number), with ``clip_times`` ``(m, 2)`` float64, each window's
``[start, end]`` in seconds from the video's first frame; ``meta["dense"]`` records the window layout
(``{"stride", "window", "clip_len", "frame_stride", "last"}``, :mod:`p3d.data.dense`) and ``video.<layer>`` is
the mean over the windows (so ``p3d svm`` works on a dense store as on any other).  ``FeatureSet.sequence(id,
layer)`` ``(W, D)``, ``.window_times(id)`` ``(W, 2)`` and ``.sequences(layer)`` read them back.
**Local descriptors** (``p3d extract --local LAYER``, :mod:`p3d.representation.local`): a part may also hold one
layer's spatial activations per clip, a row group of its own: ``local.<layer>`` ``(R, D)`` float16 (every clip's
positions, clip after clip, video after video), ``local_video`` ``(R,)`` int64 (row of ``video.*`` each descriptor
belongs to) and ``local_clip`` ``(R,)`` int16 (which clip of that video); ``meta["local"]`` records the layer, the
pooling and the optional PCA.  :func:`read_features` does not load them (they are 10-1000x the size of the
video rows); :func:`p3d.representation.local.iter_local` and ``LocalSet`` stream them one video at a time, and
:func:`merge_features` leaves them out (encode from the store directory).

Why this format rather than the alternatives the issue lists:

* **safetensors, not .npz**: ids, labels and provenance travel in the header as JSON text, so no pickled
  object arrays (``np.load(allow_pickle=True)`` executes code); the header is read without touching the
  data, which makes the resume check (which ids are done?) cheap on large collections; it is
  memory-mappable, readable from numpy, torch and other frameworks, and already a dependency (weights).
* **not HDF5**: h5py is not a dependency, and an HDF5 file being appended to when the process is killed can be
  left unreadable; the part layout never modifies a file once written.
* **parts, not one growing file**: every part is written to a temporary name and ``os.replace``-d into place,
  so a part either exists complete or not at all.  A kill loses at most the videos of the chunk in memory
  (``flush_every`` videos), which are recomputed on the next run; everything flushed is kept.  Ranks write
  disjoint file names, so sharded extraction needs no locking, and merging is concatenation.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "p3d-features"
VERSION = 1
META_NAME = "meta.json"
_PART_RE = re.compile(r"^part-r(\d{4})-(\d{6})\.safetensors$")
# Keys of the meta dict that must agree when resuming into an existing store: features computed by a different
# model or preprocessing must never be mixed silently with the ones already there.
_RESUME_KEYS = ("model", "layers", "input_spec", "num_clips", "flip", "map_pooling", "weights")
# ... and those whose absence means None: a dense store never takes clip-averaged videos, a store with local
# descriptors never takes videos without them (nor the reverses), and an encoded store never mixes encoders
_RESUME_KEYS_OPTIONAL = ("dense", "local", "encoding")
# the tensors of the local-descriptor row group (module docstring): never loaded by read_features
LOCAL_PREFIX = "local"


@dataclass
class FeatureSet:
    """Video-level (and optionally clip-level) features of a collection, with provenance.

    Attributes:
        ids: video ids, one per row, length ``N``.
        labels: ``(N,)`` int64, ``-1`` where the label is unknown; the first label of a multi-label video.
        multi_labels: all labels of each video (``()`` when unknown), or None when no video of the store has
            more than one label.  ``multi_labels[i][0] == labels[i]`` wherever ``labels[i] >= 0``.
        video: layer name -> ``(N, D_layer)`` float32 video-level descriptors.
        clip: layer name -> ``(M, D_layer)`` clip descriptors (empty when not stored).
        clip_video: ``(M,)`` int64 row in ``ids`` of each clip.
        clip_index: ``(M,)`` int64 number of each clip within its video.
        clip_times: ``(M, 2)`` float64 ``[start, end]`` seconds of each window of a dense store (``(0, 2)`` else).
        meta: provenance (model, layers, input_spec, num_clips, flip, class_names ...).
        bad: video id -> reason, for videos that could not be read (never fatal to the run).
    """

    ids: list[str]
    labels: np.ndarray
    video: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    bad: dict[str, str] = field(default_factory=dict)
    clip: dict[str, np.ndarray] = field(default_factory=dict)
    clip_video: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clip_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    source: str = ""
    multi_labels: list[tuple[int, ...]] | None = None
    clip_times: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))

    def __post_init__(self) -> None:
        n = len(self.ids)
        where = self.source or "features"
        if self.labels.shape != (n,):
            raise ValueError(f"{where}: labels shape {self.labels.shape}, expected ({n},)")
        if self.multi_labels is not None:
            self.multi_labels = [tuple(int(c) for c in labs) for labs in self.multi_labels]
            if len(self.multi_labels) != n:
                raise ValueError(f"{where}: {len(self.multi_labels)} multi-label lists, expected {n}")
            for vid, first, labs in zip(self.ids, self.labels, self.multi_labels, strict=True):
                if (labs[0] if labs else -1) != first:
                    raise ValueError(f"{where}: video {vid!r} has label {first} but label list {list(labs)}")
        for name, arr in self.video.items():
            if arr.ndim != 2 or arr.shape[0] != n:
                raise ValueError(
                    f"{self.source or 'features'}: layer {name!r} has shape {arr.shape}, expected ({n}, D)"
                )
        self._row = {vid: i for i, vid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def layers(self) -> list[str]:
        return list(self.video)

    @property
    def class_names(self) -> list[str] | None:
        names = self.meta.get("class_names")
        return list(names) if names else None

    def layer(self, name: str | None = None) -> np.ndarray:
        """``(N, D)`` video features of layer ``name`` (default: ``pool5`` if present, else the first)."""
        if name is None:
            name = "pool5" if "pool5" in self.video else next(iter(self.video), None)
            if name is None:
                raise ValueError(f"{self.source or 'features'}: holds no layers")
        if name not in self.video:
            raise ValueError(f"{self.source or 'features'}: no layer {name!r}; it holds {self.layers}")
        return self.video[name]

    def rows(self, ids: Sequence[str], what: str = "the id list") -> np.ndarray:
        """Row indices of ``ids``; raises naming the missing ids (at most 5 shown)."""
        missing = [i for i in ids if i not in self._row]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(
                f"{len(missing)} video id(s) of {what} are not in {self.source or 'the features'} "
                f"({len(self.ids)} videos): {shown}{more}"
            )
        return np.array([self._row[i] for i in ids], dtype=np.int64)

    def has(self, video_id: str) -> bool:
        return video_id in self._row

    # -- dense stores: one sequence of window features per video -------------------------------------------
    @property
    def is_dense(self) -> bool:
        """Whether the clip rows are dense windows with their times (``p3d extract --dense``)."""
        return bool(self.meta.get("dense")) and len(self.clip_times) == len(self.clip_video)

    def _check_dense(self) -> None:
        if not self.is_dense:
            raise ValueError(f"{self.source or 'features'}: holds no window sequences (extract with --dense)")

    def _windows_of(self, video_id: str) -> np.ndarray:
        """Clip rows of ``video_id`` in window order."""
        if not hasattr(self, "_clip_order"):
            self._clip_order = np.lexsort((self.clip_index, self.clip_video))
            self._clip_bounds = np.searchsorted(self.clip_video[self._clip_order], np.arange(len(self.ids) + 1))
        i = int(self.rows([video_id])[0])
        return self._clip_order[self._clip_bounds[i] : self._clip_bounds[i + 1]]

    def sequence(self, video_id: str, layer: str | None = None) -> np.ndarray:
        """``(W, D)`` float32 window features of one video of a dense store, in time order (``layer`` as in
        :meth:`layer`)."""
        self._check_dense()
        name = layer if layer is not None else ("pool5" if "pool5" in self.clip else next(iter(self.clip), None))
        if name not in self.clip:
            where = self.source or "features"
            raise ValueError(f"{where}: no window features of layer {name!r}; it holds {list(self.clip)}")
        return self.clip[name][self._windows_of(video_id)]

    def window_times(self, video_id: str) -> np.ndarray:
        """``(W, 2)`` float64 ``[start, end]`` seconds of each window of one video of a dense store."""
        self._check_dense()
        return self.clip_times[self._windows_of(video_id)]

    def sequences(self, layer: str | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """``(video id, (W, D) window features, (W, 2) window times)`` of every video of a dense store."""
        for vid in self.ids:
            yield vid, self.sequence(vid, layer), self.window_times(vid)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save_part(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write one safetensors file atomically (temp name in the same directory, fsync, ``os.replace``)."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=dict(metadata))
    _atomic_write_bytes(path, data)


def _read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            md = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    if md.get("format") != FORMAT:
        raise ValueError(f"{path}: not a p3d feature file (metadata format={md.get('format')!r})")
    if int(md.get("version", "0")) > VERSION:
        raise ValueError(f"{path}: feature format version {md['version']} is newer than this p3d ({VERSION})")
    return md


def list_parts(root: str | Path) -> list[Path]:
    """Completed part files of a feature store, in (rank, sequence) order; temporary files are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    parts = []
    for p in root.iterdir():
        m = _PART_RE.match(p.name)
        if m is not None:
            parts.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _, p in sorted(parts)]


def read_meta(root: str | Path) -> dict[str, Any] | None:
    """The store's ``meta.json``, or None if there is none yet."""
    p = Path(root) / META_NAME
    if not p.exists():
        return None
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: invalid JSON ({e})") from e
    return meta


def done_ids(root: str | Path, include_bad: bool = True) -> set[str]:
    """Ids already in the store (from part headers only; no feature data is read).

    With ``include_bad`` the videos recorded as unreadable count as done too (a re-run does not retry them).
    """
    out: set[str] = set()
    for p in list_parts(root):
        md = _read_header(p)
        out.update(json.loads(md["ids"]))
        if include_bad:
            out.update(json.loads(md.get("bad", "{}")))
    return out


def check_meta_compatible(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> None:
    """Raise if ``new`` would write features differing in model/preprocessing from those in ``where``."""
    diffs = [k for k in _RESUME_KEYS if k in old and k in new and old[k] != new[k]]
    diffs += [k for k in _RESUME_KEYS_OPTIONAL if old.get(k) != new.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: stored {old.get(k)!r}, requested {new.get(k)!r}" for k in diffs)
        raise ValueError(
            f"{where} already holds features made with different settings ({detail}); use another output directory"
        )


class FeatureWriter:
    """Appends video descriptors to a feature store, flushing complete parts atomically.

    Resumable: ``done`` holds the ids already in the store (all ranks' parts), callers skip them.  Sharded:
    each rank writes ``part-r{rank}-*`` only.  Use as a context manager so the last chunk is flushed on exit
    (also on an exception or Ctrl-C; a SIGKILL loses at most the current chunk).

    Args:
        root: the store directory (created).
        meta: provenance, JSON-serialisable; checked against an existing ``meta.json`` (see ``_RESUME_KEYS``).
        rank: this process's rank (torch.distributed ``RANK``).
        flush_every: videos per part; ``flush_seconds``: also flush when the chunk is older than this;
            ``flush_clips``: also flush when the chunk holds this many clip rows (dense stores: windows);
            ``flush_local_bytes``: also flush when the chunk's local descriptors reach this size.
    """

    def __init__(
        self,
        root: str | Path,
        meta: Mapping[str, Any],
        rank: int = 0,
        flush_every: int = 256,
        flush_seconds: float = 120.0,
        flush_clips: int | None = None,
        flush_local_bytes: int = 256 * 2**20,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: output must be a directory (a feature store), found a file")
        self.root.mkdir(parents=True, exist_ok=True)
        self.meta = json.loads(json.dumps(dict(meta)))  # normalise tuples -> lists, fail early if not JSON
        old = read_meta(self.root)
        if old is not None:
            check_meta_compatible(old, self.meta, str(self.root))
        else:
            _atomic_write_bytes(self.root / META_NAME, (json.dumps(self.meta, indent=1) + "\n").encode())
        self.rank = int(rank)
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = float(flush_seconds)
        self.flush_clips = None if flush_clips is None else max(1, int(flush_clips))
        self.flush_local_bytes = max(1, int(flush_local_bytes))
        self.done: set[str] = done_ids(self.root)
        mine = []
        for p in list_parts(self.root):
            m = _PART_RE.match(p.name)
            if m is not None and int(m.group(1)) == self.rank:
                mine.append(int(m.group(2)))
        self._seq = max(mine, default=-1) + 1
        self._dims: dict[str, int] = {}
        self._reset()
        self.written = 0

    def _reset(self) -> None:
        self._ids: list[str] = []
        self._labels: list[tuple[int, ...]] = []
        self._video: dict[str, list[np.ndarray]] = {}
        self._clip: dict[str, list[np.ndarray]] = {}
        self._clip_video: list[int] = []
        self._clip_index: list[int] = []
        self._clip_times: list[np.ndarray] = []
        self._local: list[np.ndarray] = []  # one (clips, positions, D) float16 array per video
        self._local_bytes = 0
        self._bad: dict[str, str] = {}
        self._started = time.monotonic()

    def add(
        self,
        video_id: str,
        video: Mapping[str, np.ndarray],
        label: int | Sequence[int] | None = None,
        clip: Mapping[str, np.ndarray] | None = None,
        clip_times: np.ndarray | None = None,
        local: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Add one video: ``video[layer]`` is ``(D,)``; ``clip[layer]`` (optional) is ``(num_clips, D)``;
        ``clip_times`` ``(num_clips, 2)`` the windows' ``[start, end]`` seconds (dense stores: every video has them).

        ``label``: a class number, or all class numbers of a multi-label video (``Sample.labels``; the first is
        stored as ``labels``, the full list as ``multi_labels``); None, ``-1`` or ``()`` when unknown.
        ``local``: ``{meta["local"]["layer"]: (clips, positions, D)}`` local descriptors, stored as float16 (required
        exactly when the store's meta has ``local``; see the module docstring).
        """
        labels = _label_tuple(label, video_id)
        n_clips = len(next(iter(clip.values()))) if clip else 0
        if clip_times is not None:
            clip_times = np.asarray(clip_times, dtype=np.float64)
            if clip_times.shape != (n_clips, 2):
                raise ValueError(f"video {video_id!r}: clip_times must be ({n_clips}, 2), got {clip_times.shape}")
        if self._ids and (clip_times is None) != (not self._clip_times):
            raise ValueError(f"video {video_id!r}: every video of a part needs clip_times, or none")
        local_rows = self._check_local(video_id, local)
        if self._dims and set(video) != set(self._dims):
            raise ValueError(f"video {video_id!r}: layers {sorted(video)} differ from {sorted(self._dims)}")
        for name, v in video.items():
            v = np.asarray(v, dtype=np.float32)
            if v.ndim != 1:
                raise ValueError(f"video {video_id!r}: layer {name!r} descriptor must be 1-D, got {v.shape}")
            if name in self._dims and v.shape[0] != self._dims[name]:
                raise ValueError(
                    f"video {video_id!r}: layer {name!r} has {v.shape[0]} dimensions, earlier videos {self._dims[name]}"
                )
            self._dims[name] = v.shape[0]
            self._video.setdefault(name, []).append(v)
        if clip:
            n = None
            for name, c in clip.items():
                c = np.asarray(c, dtype=np.float32)
                if c.ndim != 2 or (n is not None and c.shape[0] != n):
                    raise ValueError(f"video {video_id!r}: clip features of {name!r} have shape {c.shape}")
                n = c.shape[0]
                self._clip.setdefault(name, []).append(c)
            self._clip_video.extend([len(self._ids)] * int(n or 0))
            self._clip_index.extend(range(int(n or 0)))
        if clip_times is not None:
            self._clip_times.append(clip_times)
        if local_rows is not None:
            self._local.append(local_rows)
            self._local_bytes += local_rows.nbytes
        self._ids.append(str(video_id))
        self._labels.append(labels)
        self.done.add(str(video_id))
        self._maybe_flush()

    def _check_local(self, video_id: str, local: Mapping[str, np.ndarray] | None) -> np.ndarray | None:
        """The video's local descriptors as float16 ``(clips, positions, D)``, checked against ``meta["local"]``."""
        spec = self.meta.get("local")
        if spec is None:
            if local:
                raise ValueError(f"video {video_id!r}: local descriptors given, but the store's meta has no 'local'")
            return None
        if not local or set(local) != {spec["layer"]}:
            raise ValueError(f"video {video_id!r}: expected local descriptors of layer {spec['layer']!r} only")
        x = np.asarray(local[spec["layer"]])
        dim = self._local[0].shape[2] if self._local else (x.shape[-1] if x.ndim else 0)
        if x.ndim != 3 or 0 in x.shape or x.shape[2] != dim:
            raise ValueError(
                f"video {video_id!r}: local descriptors must be (clips, positions, D={dim}), got {x.shape}"
            )
        if x.shape[0] >= 2**15:
            raise ValueError(f"video {video_id!r}: {x.shape[0]} clips; local_clip is int16 (at most 32767)")
        with np.errstate(over="ignore"):
            x16 = x.astype(np.float16)
        if not np.isfinite(x16).all():
            raise ValueError(f"video {video_id!r}: local descriptors are not finite in float16 (|x| > 65504 or NaN)")
        return x16

    def add_bad(self, video_id: str, reason: str) -> None:
        """Record a video that could not be processed (listed in the store, not fatal)."""
        self._bad[str(video_id)] = str(reason)
        self.done.add(str(video_id))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        n = len(self._ids) + len(self._bad)
        if (
            n >= self.flush_every
            or (n and time.monotonic() - self._started > self.flush_seconds)
            or (self.flush_clips is not None and len(self._clip_video) >= self.flush_clips)
            or self._local_bytes >= self.flush_local_bytes
        ):
            self.flush()

    def flush(self) -> Path | None:
        """Write the pending chunk as a new part (atomically); returns its path (None if nothing pending)."""
        if not self._ids and not self._bad:
            return None
        tensors: dict[str, np.ndarray] = {}
        for name, rows in self._video.items():
            tensors[f"video.{name}"] = np.stack(rows)
        if self._clip:
            for name, rows in self._clip.items():
                tensors[f"clip.{name}"] = np.concatenate(rows)
            tensors["clip_video"] = np.asarray(self._clip_video, dtype=np.int64)
            tensors["clip_index"] = np.asarray(self._clip_index, dtype=np.int64)
        if self._clip_times:
            tensors["clip_times"] = np.concatenate(self._clip_times)
        if self._local:
            tensors.update(_local_tensors(self.meta["local"]["layer"], self._local))
        path = self.root / f"part-r{self.rank:04d}-{self._seq:06d}.safetensors"
        _save_part(path, tensors, _part_metadata(self.meta, self._ids, self._labels, self._bad))
        self.written += len(self._ids)
        self._seq += 1
        self._reset()
        return path

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _local_tensors(layer: str, videos: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The local row group of a part from each video's ``(clips, positions, D)`` descriptors, in video order."""
    counts = [v.shape[0] * v.shape[1] for v in videos]
    return {
        f"{LOCAL_PREFIX}.{layer}": np.concatenate([v.reshape(-1, v.shape[2]) for v in videos]),
        f"{LOCAL_PREFIX}_video": np.repeat(np.arange(len(videos), dtype=np.int64), counts),
        f"{LOCAL_PREFIX}_clip": np.concatenate([np.repeat(np.arange(v.shape[0]), v.shape[1]) for v in videos]).astype(
            np.int16
        ),
    }


def _label_tuple(label: int | Sequence[int] | None, video_id: str) -> tuple[int, ...]:
    """``label`` as a tuple of distinct class numbers in the given order (negative numbers: unknown, dropped)."""
    if label is None:
        return ()
    if isinstance(label, (int, np.integer)):
        return (int(label),) if int(label) >= 0 else ()
    try:
        labs = [int(c) for c in label]
    except (TypeError, ValueError) as e:
        raise ValueError(f"video {video_id!r}: label must be an int or a sequence of ints, got {label!r}") from e
    return tuple(dict.fromkeys(c for c in labs if c >= 0))


def _part_metadata(
    meta: Mapping[str, Any], ids: Sequence[str], labels: Sequence[Sequence[int]], bad: Mapping[str, str]
) -> dict[str, str]:
    """Header of a part; ``labels`` holds each video's label tuple (``()`` when unknown)."""
    md = {
        "format": FORMAT,
        "version": str(VERSION),
        "meta": json.dumps(meta),
        "ids": json.dumps(list(ids)),
        "labels": json.dumps([int(labs[0]) if labs else None for labs in labels]),
        "bad": json.dumps(dict(bad)),
    }
    if any(len(labs) > 1 for labs in labels):
        md["multi_labels"] = json.dumps([[int(c) for c in labs] for labs in labels])
    return md


def _read_part(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """Header and tensors of a part, without the local-descriptor row group (read lazily by its own reader)."""
    from safetensors import safe_open

    md = _read_header(path)
    with safe_open(str(path), framework="np") as f:
        return md, {k: f.get_tensor(k) for k in f.keys() if not k.startswith(LOCAL_PREFIX)}


def read_features(path: str | Path, layers: Iterable[str] | None = None) -> FeatureSet:
    """Read a feature store directory or a merged ``.safetensors`` file.

    Duplicate ids (possible only if two runs wrote the same store concurrently) keep their first occurrence,
    with a warning.  A video both listed bad and extracted (a later retry succeeded) counts as extracted.
    """
    path = Path(path)
    if path.is_dir():
        files = list_parts(path)
        if not files:
            raise FileNotFoundError(f"{path}: no feature parts (part-r*.safetensors) in this directory")
        meta = read_meta(path)
    elif path.exists():
        files = [path]
        meta = None
    else:
        raise FileNotFoundError(f"{path}: no such feature file or directory")
    want = None if layers is None else list(layers)

    ids: list[str] = []
    labels: list[int] = []
    multi: list[tuple[int, ...]] = []
    any_multi = False
    video: dict[str, list[np.ndarray]] = {}
    clip: dict[str, list[np.ndarray]] = {}
    clip_video: list[np.ndarray] = []
    clip_index: list[np.ndarray] = []
    clip_times: list[np.ndarray] = []
    bad: dict[str, str] = {}
    seen: set[str] = set()
    dupes = 0
    for f in files:
        md, t = _read_part(f)
        if meta is None:
            meta = json.loads(md["meta"])
        part_ids = json.loads(md["ids"])
        part_labels = json.loads(md["labels"])
        if "multi_labels" in md:
            any_multi = True
            part_multi = [tuple(labs) for labs in json.loads(md["multi_labels"])]
            if len(part_multi) != len(part_ids):
                raise ValueError(f"{f}: {len(part_multi)} multi-label lists for {len(part_ids)} videos")
        else:
            part_multi = [() if lab is None else (int(lab),) for lab in part_labels]
        bad.update(json.loads(md.get("bad", "{}")))
        keep = []
        for i, vid in enumerate(part_ids):
            if vid in seen:
                dupes += 1
                continue
            seen.add(vid)
            keep.append(i)
        keep_a = np.asarray(keep, dtype=np.int64)
        base = len(ids)
        ids.extend(part_ids[i] for i in keep)
        labels.extend(-1 if part_labels[i] is None else int(part_labels[i]) for i in keep)
        multi.extend(part_multi[i] for i in keep)
        names = sorted(k[len("video.") :] for k in t if k.startswith("video."))
        if want is not None:
            missing = [n for n in want if n not in names]
            if missing:
                raise ValueError(f"{f}: no layer(s) {missing}; it holds {names}")
            names = want
        if video and set(names) != set(video):
            raise ValueError(f"{f}: layers {names} differ from the other parts' {sorted(video)}")
        for n in names:
            arr = t[f"video.{n}"]
            if video.get(n) and arr.shape[1] != video[n][0].shape[1]:
                raise ValueError(f"{f}: layer {n!r} is {arr.shape[1]}-d, other parts {video[n][0].shape[1]}-d")
            video.setdefault(n, []).append(arr[keep_a])
        if "clip_video" in t:
            cv = t["clip_video"]
            remap = np.full(len(part_ids), -1, dtype=np.int64)
            remap[keep_a] = base + np.arange(len(keep), dtype=np.int64)
            sel = remap[cv] >= 0
            clip_video.append(remap[cv][sel])
            clip_index.append(t["clip_index"][sel])
            if "clip_times" in t:
                clip_times.append(t["clip_times"][sel])
            for n in names:
                if f"clip.{n}" in t:
                    clip.setdefault(n, []).append(t[f"clip.{n}"][sel])
    if dupes:
        warnings.warn(f"{path}: {dupes} duplicate video id(s) ignored (kept the first)", stacklevel=2)
    for vid in ids:
        bad.pop(vid, None)
    video_a = {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in video.items()}
    clip_a = {n: np.concatenate(v) for n, v in clip.items()}
    if clip_a and any(len(v) != sum(len(c) for c in clip_video) for v in clip_a.values()):
        raise ValueError(f"{path}: clip features are missing from some parts")
    if clip_times and sum(len(c) for c in clip_times) != sum(len(c) for c in clip_video):
        raise ValueError(f"{path}: window times are missing from some parts")
    return FeatureSet(
        ids=ids,
        labels=np.asarray(labels, dtype=np.int64),
        video=video_a,
        meta=meta or {},
        bad=bad,
        clip=clip_a,
        clip_video=np.concatenate(clip_video) if clip_video else np.zeros(0, np.int64),
        clip_index=np.concatenate(clip_index) if clip_index else np.zeros(0, np.int64),
        source=str(path),
        multi_labels=multi if any_multi else None,
        clip_times=np.concatenate(clip_times) if clip_times else np.zeros((0, 2), np.float64),
    )


def write_features(fs: FeatureSet, out: str | Path) -> Path:
    """Write a whole :class:`FeatureSet` as one part-shaped safetensors file (atomically)."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a directory; give a .safetensors file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"video.{n}": v for n, v in fs.video.items()}
    if fs.clip:
        tensors.update({f"clip.{n}": v for n, v in fs.clip.items()})
        tensors["clip_video"] = fs.clip_video.astype(np.int64)
        tensors["clip_index"] = fs.clip_index.astype(np.int64)
        if len(fs.clip_times):
            tensors["clip_times"] = fs.clip_times.astype(np.float64)
    if fs.multi_labels is not None:
        labels = fs.multi_labels
    else:
        labels = [() if lab < 0 else (int(lab),) for lab in fs.labels]
    _save_part(out, tensors, _part_metadata(fs.meta, fs.ids, labels, fs.bad))
    return out


def merge_features(root: str | Path, out: str | Path, sort_ids: bool = True) -> Path:
    """Merge all ranks' parts of a store into one ``.safetensors`` file (ids sorted unless ``sort_ids``)."""
    fs = read_features(root)
    if sort_ids:
        order = np.argsort(np.asarray(fs.ids, dtype=object), kind="stable")
        fs = _take(fs, order)
    return write_features(fs, out)


def _take(fs: FeatureSet, rows: np.ndarray) -> FeatureSet:
    """Subset/reorder the videos of ``fs`` (clip rows follow their video)."""
    rows = np.asarray(rows, dtype=np.int64)
    clip: dict[str, np.ndarray] = {}
    cv = np.zeros(0, np.int64)
    ci = np.zeros(0, np.int64)
    ct = np.zeros((0, 2), np.float64)
    if fs.clip:
        new_of_old = np.full(len(fs.ids), -1, dtype=np.int64)
        new_of_old[rows] = np.arange(len(rows))
        mapped = new_of_old[fs.clip_video]
        order = np.lexsort((fs.clip_index, mapped))
        order = order[mapped[order] >= 0]
        clip = {n: v[order] for n, v in fs.clip.items()}
        cv, ci = mapped[order], fs.clip_index[order]
        if len(fs.clip_times):
            ct = fs.clip_times[order]
    return FeatureSet(
        ids=[fs.ids[i] for i in rows],
        labels=fs.labels[rows],
        video={n: v[rows] for n, v in fs.video.items()},
        meta=fs.meta,
        bad=fs.bad,
        clip=clip,
        clip_video=cv,
        clip_index=ci,
        source=fs.source,
        multi_labels=None if fs.multi_labels is None else [fs.multi_labels[i] for i in rows],
        clip_times=ct,
    )
