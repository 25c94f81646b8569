"""Representation files: written by ``p3d extract``, read by ``p3d svm`` / ``similarity`` / ``embed``.

Format (version 1): **safetensors parts plus a JSON header**, one directory per extraction run::

    features/                                 # a "feature store"
      meta.json                               # model, layers, InputSpec, clips per video, flip, class names ...
      part-r0000-000000-3f9a0c1e.safetensors  # a chunk of videos written by rank 0 (writer id 3f9a0c1e)
      part-r0001-000000-b27d44a0.safetensors  # ... by rank 1 (torchrun)
      part-r0000-000001-3f9a0c1e.safetensors
      .p3d-lock-r0000                         # rank 0's writer lock (see below)

Each part is a plain safetensors file.  Its tensors are ``video.<layer>`` ``(n, D_layer)`` float32 (the
video-level descriptor: mean of the clip descriptors, Sec. 5 of the paper), optionally ``clip.<layer>``
``(m, D_layer)`` with ``clip_video`` ``(m,)`` int64 (row of ``video.*`` each clip belongs to) and
``clip_index`` ``(m,)`` int64 (which test clip of that video).  Its string metadata holds ``format``,
``version``, ``meta`` (the same JSON as ``meta.json``), ``ids`` (JSON list, the rows of ``video.*``),
``labels`` (JSON list of int or null: the first label of each video), ``multi_labels`` (JSON list of lists of
int: all labels of each video, e.g. ActivityNet untrimmed or Sports-1M; written only by parts holding a video
with more than one label, so single-label stores and readers older than the key are unchanged) and ``bad``
(JSON object ``{video id: reason}``), ``writer`` (the writer id of the file name) and ``sha256``: the
:func:`p3d.fileio.tensor_digest` of all the part's tensors and all its other header fields, verified by every
reader, so a flipped byte in the data or the header is one :class:`~p3d.errors.IntegrityError` naming the part,
never changed numbers (parts written before the checksum are still read, unverified, with their structure
checked).  ``p3d merge-features`` writes the whole store as one part-shaped file, so a merged ``.safetensors``
file and a directory are read by the same :func:`read_features`; ``p3d verify`` checks either.

One writer per rank, and no writer can overwrite another's parts: a :class:`FeatureWriter` holds an OS lock on
``.p3d-lock-r<rank>`` (a second writer of the same rank is refused at once, naming the holder's pid and host;
the ranks of one ``torchrun`` job lock their own files), and every part name carries the writer's random id, so
even writers that bypass the lock (other hosts on a file system without locks) write different files.  Reading
keeps the first copy of a video id written twice and reports the duplicates (:attr:`FeatureSet.duplicates`).

Non-finite features are never written: a video whose descriptor holds NaN or inf is recorded as bad with the
reason ``non-finite features (layer L)`` (:func:`nonfinite_reason`); :func:`p3d.representation.extract.
extract_features` stops with one error instead when every video comes out non-finite (broken weights or
precision), before writing any record.  Writes that fail (read-only folder, full disk) raise
:class:`~p3d.errors.StorageError` naming the part; the parts written before it are complete.

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
  so a part either exists complete or not at all.  A SIGKILL loses at most the videos of the chunk in memory
  (``flush_every`` videos), which are recomputed on the next run; SIGTERM and SIGINT write it first.  Ranks
  write disjoint file names, and merging is concatenation.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from p3d.errors import IntegrityError, missing_ids_error
from p3d.fileio import OutputLock, atomic_write_bytes, tensor_digest

FORMAT = "p3d-features"
VERSION = 1
META_NAME = "meta.json"
CHECKSUM_KEY = "sha256"
LOCAL_CHECKSUM_KEY = "local_sha256"  # the local row group's, verified by verify_features (read lazily otherwise)
# part-r<rank>-<sequence>[-<writer id>].safetensors; parts written before writer ids have none
_PART_RE = re.compile(r"^part-r(\d{4})-(\d{6})(?:-([0-9a-f]{8}))?\.safetensors$")
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
        duplicates: copies of video ids found again in later parts and left out (two writers did the same video).
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
    duplicates: int = 0

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
            raise missing_ids_error(missing, what, self.source or "the features", len(self.ids))
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


def _checksum(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> str:
    """SHA-256 of every tensor and every header field of a part except the checksum itself and the local row
    group, which has its own (:data:`LOCAL_CHECKSUM_KEY`, a header field, so covered by this one)."""
    fields = {k: v for k, v in metadata.items() if k != CHECKSUM_KEY}
    main = {k: v for k, v in tensors.items() if not k.startswith(LOCAL_PREFIX)}
    return tensor_digest({"metadata": fields, "tensors": main})


def _local_checksum(tensors: Mapping[str, np.ndarray]) -> str:
    return tensor_digest({k: v for k, v in tensors.items() if k.startswith(LOCAL_PREFIX)})


def _save_part(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Write one safetensors file atomically (temp name in the same directory, fsync, ``os.replace``), with the
    checksum of its tensors and header fields."""
    from safetensors.numpy import save

    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    md = {k: v for k, v in metadata.items() if k not in (CHECKSUM_KEY, LOCAL_CHECKSUM_KEY)}
    if any(k.startswith(LOCAL_PREFIX) for k in arrays):
        md[LOCAL_CHECKSUM_KEY] = _local_checksum(arrays)
    md[CHECKSUM_KEY] = _checksum(arrays, md)
    atomic_write_bytes(path, save(arrays, metadata=md))


def _read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            md = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise IntegrityError(f"{path}: damaged, or not a safetensors file ({e})") from None
    if md.get("format") != FORMAT:
        raise ValueError(f"{path}: not a p3d feature file (metadata format={md.get('format')!r})")
    try:
        version = int(md.get("version", "0"))
    except ValueError:
        raise IntegrityError(f"{path}: damaged header (version {md.get('version')!r})") from None
    if version > VERSION:
        raise ValueError(f"{path}: feature format version {md['version']} is newer than this p3d ({VERSION})")
    return md


def _header_json(md: Mapping[str, str], key: str, path: Path, kind: type, default: str | None = None) -> Any:
    """Header field ``key`` parsed as JSON of type ``kind``; a damaged field is an error naming the part."""
    text = md.get(key, default)
    if text is None:
        raise IntegrityError(f"{path}: damaged header (no {key!r} field)")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{path}: damaged header field {key!r} ({e})") from None
    if not isinstance(value, kind):
        raise IntegrityError(f"{path}: damaged header field {key!r} (a {type(value).__name__}, not a {kind.__name__})")
    return value


def list_parts(root: str | Path) -> list[Path]:
    """Completed part files of a feature store, in (rank, sequence, writer) order; temporary files are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    parts = []
    for p in root.iterdir():
        m = _PART_RE.match(p.name)
        if m is not None:
            parts.append(((int(m.group(1)), int(m.group(2)), m.group(3) or ""), p))
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
        out.update(_header_json(md, "ids", p, list))
        if include_bad:
            out.update(_header_json(md, "bad", p, dict, "{}"))
    return out


def nonfinite_reason(
    video: Mapping[str, np.ndarray],
    clip: Mapping[str, np.ndarray] | None = None,
    local: Mapping[str, np.ndarray] | None = None,
) -> str | None:
    """``"non-finite features (layer L)"`` when a descriptor of ``video`` (or ``clip``, or the local descriptors)
    holds NaN or inf, else None: the reason a video is recorded as bad instead of written (see the module
    docstring)."""
    for group in (video, clip or {}, local or {}):
        for name, v in group.items():
            if not np.isfinite(np.asarray(v)).all():
                return f"non-finite features (layer {name})"
    return None


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
    (also on an exception or Ctrl-C; a SIGKILL loses at most the current chunk).  The writer owns its rank of the
    store while open (see the module docstring); a second writer raises :class:`~p3d.errors.OutputLockedError`.

    Args:
        root: the store directory (created).
        meta: provenance, JSON-serialisable; checked against an existing ``meta.json`` (see ``_RESUME_KEYS``).
        rank: this process's rank (torch.distributed ``RANK``).
        flush_every: videos per part; ``flush_seconds``: also flush when the chunk is older than this;
            ``flush_clips``: also flush when the chunk holds this many clip rows (dense stores: windows);
            ``flush_local_bytes``: also flush when the chunk's local descriptors reach this size.
        lock: take the rank's lock (``False`` only for writers coordinated otherwise; their parts still cannot
            overwrite each other's).
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
        lock: bool = True,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"{self.root}: output must be a directory (a feature store), found a file")
        self.rank = int(rank)
        self.writer_id = uuid.uuid4().hex[:8]
        self._lock = OutputLock(self.root, f".p3d-lock-r{self.rank:04d}", f"rank {self.rank} of this feature store")
        if lock:
            self._lock.acquire()
        try:
            self.meta = json.loads(json.dumps(dict(meta)))  # normalise tuples -> lists, fail early if not JSON
            old = read_meta(self.root)
            if old is not None:
                check_meta_compatible(old, self.meta, str(self.root))
            else:
                atomic_write_bytes(self.root / META_NAME, (json.dumps(self.meta, indent=1) + "\n").encode())
            self.done: set[str] = done_ids(self.root)
        except BaseException:
            self._lock.release()
            raise
        self.flush_every = max(1, int(flush_every))
        self.flush_seconds = float(flush_seconds)
        self.flush_clips = None if flush_clips is None else max(1, int(flush_clips))
        self.flush_local_bytes = max(1, int(flush_local_bytes))
        mine = []
        for p in list_parts(self.root):
            m = _PART_RE.match(p.name)
            if m is not None and int(m.group(1)) == self.rank:
                mine.append(int(m.group(2)))
        self._seq = max(mine, default=-1) + 1
        self._dims: dict[str, int] = {}
        self._reset()
        self.written = 0
        self.parts = 0

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
    ) -> str | None:
        """Add one video: ``video[layer]`` is ``(D,)``; ``clip[layer]`` (optional) is ``(num_clips, D)``;
        ``clip_times`` ``(num_clips, 2)`` the windows' ``[start, end]`` seconds (dense stores: every video has them).

        ``label``: a class number, or all class numbers of a multi-label video (``Sample.labels``; the first is
        stored as ``labels``, the full list as ``multi_labels``); None, ``-1`` or ``()`` when unknown.
        ``local``: ``{meta["local"]["layer"]: (clips, positions, D)}`` local descriptors, stored as float16 (required
        exactly when the store's meta has ``local``; see the module docstring).
        Returns None, or the reason the video was recorded as bad instead (non-finite features).
        """
        labels = _label_tuple(label, video_id)
        reason = nonfinite_reason(video, clip, local)
        if reason is not None:
            self.add_bad(video_id, reason)
            return reason
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
        return None

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
        path = self.root / f"part-r{self.rank:04d}-{self._seq:06d}-{self.writer_id}.safetensors"
        md = _part_metadata(self.meta, self._ids, self._labels, self._bad)
        md["writer"] = self.writer_id
        _save_part(path, tensors, md)
        self.written += len(self._ids)
        self.parts += 1
        self._seq += 1
        self._reset()
        return path

    @property
    def pending(self) -> int:
        """Videos (and bad records) in memory, not yet in a part."""
        return len(self._ids) + len(self._bad)

    def close(self) -> None:
        """Flush the pending chunk and give up the lock."""
        try:
            self.flush()
        finally:
            self._lock.release()

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


@dataclass
class _Part:
    """One part file, read, verified and checked for shape: the rows of ``ids``, their labels and tensors."""

    path: Path
    meta: dict[str, Any]
    ids: list[str]
    labels: list[int | None]
    multi: list[tuple[int, ...]] | None  # None: the part has no multi_labels key (single-label videos)
    bad: dict[str, str]
    tensors: dict[str, np.ndarray]
    verified: bool  # a checksum was recorded and matches

    @property
    def layers(self) -> list[str]:
        return sorted(k[len("video.") :] for k in self.tensors if k.startswith("video."))


def read_part(path: str | Path) -> _Part:
    """Read one part (or a merged file): checksum verified first (:class:`~p3d.errors.IntegrityError` naming the
    file on a mismatch), then the header fields parsed and the row counts checked against the ids."""
    from safetensors import safe_open

    path = Path(path)
    md = _read_header(path)
    try:  # the local row group (10-1000x the rest) is left on disk: p3d.representation.local streams it
        with safe_open(str(path), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith(LOCAL_PREFIX)}
    except Exception as e:  # safetensors' own error types
        raise IntegrityError(f"{path}: damaged, data unreadable ({e})") from None
    recorded = md.get(CHECKSUM_KEY)
    if recorded is not None and _checksum(tensors, md) != recorded:
        raise IntegrityError(
            f"{path}: damaged: its tensors or header differ from the SHA-256 recorded when it was written; "
            f"move it away and re-run the extraction to recompute its videos"
        )
    ids = _header_json(md, "ids", path, list)
    labels = _header_json(md, "labels", path, list)
    multi = None
    if "multi_labels" in md:
        multi = [tuple(labs) for labs in _header_json(md, "multi_labels", path, list)]
    part = _Part(
        path=path,
        meta=_header_json(md, "meta", path, dict),
        ids=[str(v) for v in ids],
        labels=labels,
        multi=multi,
        bad=_header_json(md, "bad", path, dict, "{}"),
        tensors=tensors,
        verified=recorded is not None,
    )
    _check_rows(part)
    return part


def _check_rows(part: _Part) -> None:
    """Every per-video list and tensor has one row per id, and clip rows point at existing videos."""
    n, t, where = len(part.ids), part.tensors, part.path

    def damaged(what: str) -> IntegrityError:
        return IntegrityError(f"{where}: damaged: {what} for {n} video ids")

    if len(part.labels) != n or (part.multi is not None and len(part.multi) != n):
        raise damaged(f"{len(part.labels)} labels / {len(part.multi or part.labels)} label lists")
    for name, arr in t.items():
        if name.startswith("video.") and (arr.ndim != 2 or arr.shape[0] != n):
            raise damaged(f"{name} of shape {arr.shape}")
    if "clip_video" in t:
        cv, ci = t["clip_video"], t.get("clip_index")
        m = len(cv)
        if cv.ndim != 1 or ci is None or ci.shape != cv.shape or (m and (cv.min() < 0 or cv.max() >= n)):
            raise damaged(f"clip rows pointing outside the videos (clip_video {cv.shape})")
        for name, arr in t.items():
            if name.startswith("clip.") and arr.shape[0] != m:
                raise damaged(f"{name} of {arr.shape[0]} rows for {m} clips")
        if "clip_times" in t and t["clip_times"].shape != (m, 2):
            raise damaged(f"clip_times of shape {t['clip_times'].shape} for {m} clips")


class _Rows:
    """The rows of the parts read so far, each video id once (its first occurrence; later copies counted)."""

    def __init__(self, layers: list[str] | None) -> None:
        self.want = layers
        self.ids: list[str] = []
        self.labels: list[int] = []
        self.multi: list[tuple[int, ...]] = []
        self.any_multi = False
        self.video: dict[str, list[np.ndarray]] = {}
        self.clip: dict[str, list[np.ndarray]] = {}
        self.clip_video: list[np.ndarray] = []
        self.clip_index: list[np.ndarray] = []
        self.clip_times: list[np.ndarray] = []
        self.bad: dict[str, str] = {}
        self.duplicates = 0
        self._seen: set[str] = set()

    def add(self, part: _Part) -> None:
        keep = []
        for i, vid in enumerate(part.ids):
            if vid in self._seen:
                self.duplicates += 1
            else:
                self._seen.add(vid)
                keep.append(i)
        keep_a = np.asarray(keep, dtype=np.int64)
        base = len(self.ids)
        multi = part.multi or [() if lab is None else (int(lab),) for lab in part.labels]
        self.any_multi |= part.multi is not None
        self.ids.extend(part.ids[i] for i in keep)
        self.labels.extend(-1 if part.labels[i] is None else int(part.labels[i]) for i in keep)
        self.multi.extend(multi[i] for i in keep)
        self.bad.update(part.bad)
        names = self._layers(part)
        for n in names:
            self.video.setdefault(n, []).append(part.tensors[f"video.{n}"][keep_a])
        self._add_clips(part, names, keep_a, base)

    def _layers(self, part: _Part) -> list[str]:
        names = part.layers
        if self.want is not None:
            missing = [n for n in self.want if n not in names]
            if missing:
                raise ValueError(f"{part.path}: no layer(s) {missing}; it holds {names}")
            names = self.want
        if self.video and set(names) != set(self.video):
            raise ValueError(f"{part.path}: layers {names} differ from the other parts' {sorted(self.video)}")
        for n in names:
            d, earlier = part.tensors[f"video.{n}"].shape[1], self.video.get(n)
            if earlier and d != earlier[0].shape[1]:
                raise ValueError(f"{part.path}: layer {n!r} is {d}-d, other parts {earlier[0].shape[1]}-d")
        return names

    def _add_clips(self, part: _Part, names: list[str], keep: np.ndarray, base: int) -> None:
        t = part.tensors
        if "clip_video" not in t:
            return
        remap = np.full(len(part.ids), -1, dtype=np.int64)
        remap[keep] = base + np.arange(len(keep), dtype=np.int64)
        cv = remap[t["clip_video"]]
        sel = cv >= 0
        self.clip_video.append(cv[sel])
        self.clip_index.append(t["clip_index"][sel])
        if "clip_times" in t:
            self.clip_times.append(t["clip_times"][sel])
        for n in names:
            if f"clip.{n}" in t:
                self.clip.setdefault(n, []).append(t[f"clip.{n}"][sel])

    def feature_set(self, meta: dict[str, Any], source: str) -> FeatureSet:
        bad = {vid: why for vid, why in self.bad.items() if vid not in self._seen}  # a later retry succeeded
        clip = {n: np.concatenate(v) for n, v in self.clip.items()}
        clip_video = np.concatenate(self.clip_video) if self.clip_video else np.zeros(0, np.int64)
        if clip and any(len(v) != len(clip_video) for v in clip.values()):
            raise ValueError(f"{source}: clip features are missing from some parts")
        if self.clip_times and sum(len(c) for c in self.clip_times) != len(clip_video):
            raise ValueError(f"{source}: window times are missing from some parts")
        return FeatureSet(
            ids=self.ids,
            labels=np.asarray(self.labels, dtype=np.int64),
            video={n: np.concatenate(v).astype(np.float32, copy=False) for n, v in self.video.items()},
            meta=meta,
            bad=bad,
            clip=clip,
            clip_video=clip_video,
            clip_index=np.concatenate(self.clip_index) if self.clip_index else np.zeros(0, np.int64),
            source=source,
            multi_labels=self.multi if self.any_multi else None,
            duplicates=self.duplicates,
            clip_times=np.concatenate(self.clip_times) if self.clip_times else np.zeros((0, 2), np.float64),
        )


def _store_files(path: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """The part files of a store directory (with its meta.json) or the one merged file."""
    if path.is_dir():
        files = list_parts(path)
        if not files:
            raise FileNotFoundError(f"{path}: no feature parts (part-r*.safetensors) in this directory")
        return files, read_meta(path)
    if path.exists():
        return [path], None
    raise FileNotFoundError(f"{path}: no such feature file or directory")


def read_features(path: str | Path, layers: Iterable[str] | None = None) -> FeatureSet:
    """Read a feature store directory or a merged ``.safetensors`` file, verifying every part's checksum.

    Duplicate ids (two writers did the same video) keep their first occurrence, with a warning, and are counted
    in :attr:`FeatureSet.duplicates`.  A video both listed bad and extracted (a later retry succeeded) counts as
    extracted.
    """
    path = Path(path)
    files, meta = _store_files(path)
    rows = _Rows(None if layers is None else list(layers))
    for f in files:
        part = read_part(f)
        if meta is None:
            meta = part.meta
        rows.add(part)
    if rows.duplicates:
        warnings.warn(f"{path}: {rows.duplicates} duplicate video id(s) ignored (kept the first)", stacklevel=2)
    return rows.feature_set(meta or {}, str(path))


@dataclass
class PartCheck:
    """What :func:`verify_features` found in one part: ``status`` is ``intact`` (checksum matches),
    ``unverified`` (written before checksums; readable and consistent) or ``damaged`` (``problem`` says how)."""

    path: Path
    status: str
    videos: int = 0
    bad: int = 0
    problem: str = ""


@dataclass
class FeatureCheck:
    """:func:`verify_features` of a store or merged file: every part's check, and the duplicate video ids."""

    path: Path
    parts: list[PartCheck]
    duplicates: int = 0
    problem: str = ""  # meta.json unreadable, no parts ...

    @property
    def ok(self) -> bool:
        return not self.problem and all(p.status != "damaged" for p in self.parts)


def _verify_local(path: Path) -> str:
    """What is wrong with a part's local row group ("" when it has none or it matches its recorded checksum)."""
    from safetensors import safe_open

    md = _read_header(path)
    recorded = md.get(LOCAL_CHECKSUM_KEY)
    if recorded is None:
        return ""
    try:
        with safe_open(str(path), framework="np") as f:
            local = {k: f.get_tensor(k) for k in f.keys() if k.startswith(LOCAL_PREFIX)}
    except Exception as e:  # safetensors' own error types
        return f"local descriptors unreadable ({e})"
    if _local_checksum(local) != recorded:
        return "damaged: its local descriptors differ from the SHA-256 recorded when it was written"
    return ""


def verify_features(path: str | Path) -> FeatureCheck:
    """Check every part of a feature store (or a merged file) without stopping at the first damaged one."""
    path = Path(path)
    check = FeatureCheck(path, [])
    try:
        files, _ = _store_files(path)
    except (FileNotFoundError, ValueError) as e:
        check.problem = str(e)
        return check
    seen: set[str] = set()
    for f in files:
        try:
            part = read_part(f)
        except ValueError as e:
            check.parts.append(PartCheck(f, "damaged", problem=str(e)))
            continue
        problem = _verify_local(f)
        if problem:
            check.parts.append(PartCheck(f, "damaged", problem=problem))
            continue
        check.parts.append(PartCheck(f, "intact" if part.verified else "unverified", len(part.ids), len(part.bad)))
        check.duplicates += sum(vid in seen for vid in part.ids)
        seen.update(part.ids)
    return check


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


def join_features(sets: Sequence[FeatureSet], layers: Sequence[str | None] | None = None) -> FeatureSet:
    """Two-stream (or more) video descriptors: the stores' features of the same videos, concatenated.

    Videos are joined by id (those of the first store found in every store, in its order; the others are listed
    in ``bad``); each store's block of layer ``layers[k]`` (default: its ``pool5``, else its first layer) is L2
    normalised before concatenation, so a stream with larger activations does not outweigh the other.  Labels
    must agree where both stores know them.  The result has one layer named ``"+".join`` of the stores' layer
    names and no clip-level features; ``meta["joined"]`` records the sources.
    """
    if len(sets) < 2:
        raise ValueError(f"joining features needs at least two stores, got {len(sets)}")
    layers = list(layers) if layers is not None else [None] * len(sets)
    if len(layers) != len(sets):
        raise ValueError(f"{len(layers)} layer names for {len(sets)} feature stores")
    names = [lay or ("pool5" if "pool5" in fs.video else fs.layers[0]) for fs, lay in zip(sets, layers, strict=True)]
    common = [vid for vid in sets[0].ids if all(fs.has(vid) for fs in sets[1:])]
    if not common:
        raise ValueError(f"the feature stores {[fs.source for fs in sets]} have no video id in common")
    blocks, bad, keep = [], {}, set(common)
    for fs, name in zip(sets, names, strict=True):
        x = fs.layer(name)[fs.rows(common)].astype(np.float32)
        blocks.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
        bad.update({vid: f"{fs.source}: {why}" for vid, why in fs.bad.items()})
        bad.update({vid: f"only in {fs.source}" for vid in fs.ids if vid not in keep})
    first = _take(sets[0], sets[0].rows(common))
    for fs in sets[1:]:
        other = fs.labels[fs.rows(common)]
        clash = [vid for vid, a, b in zip(common, first.labels, other, strict=True) if a >= 0 and b >= 0 and a != b]
        if clash:
            raise ValueError(f"{fs.source} labels {clash[:5]} differently from {sets[0].source}: not the same videos?")
    meta = {**sets[0].meta, "joined": [{"source": fs.source, "layer": n} for fs, n in zip(sets, names, strict=True)]}
    return FeatureSet(
        ids=common,
        labels=first.labels,
        video={"+".join(names): np.concatenate(blocks, axis=1)},
        meta=meta,
        bad=bad,
        source=" + ".join(fs.source for fs in sets),
        multi_labels=first.multi_labels,
    )
