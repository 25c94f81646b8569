"""Local descriptors: one conv layer's activations kept per position and clip, for encoding (paper, Sec. 5).

The paper reaches 90.5 % on UCF101 by encoding "the activations of res5c layer" with FV-VAE (Qiu, Yao & Mei,
CVPR 2017) instead of averaging them into pool5 (88.6 %).  ``p3d extract --local res5c`` keeps them: every clip's
map ``(C, T', H, W)`` becomes a set of ``C``-d local descriptors, stored in the feature store next to the video rows
(:mod:`p3d.representation.store`, "local descriptors") and read back one video at a time by :class:`LocalSet` /
:func:`iter_local`, which is what the encoders of :mod:`p3d.representation.encoders` consume.

**Positions.**  res5c of P3D ResNet at 160 x 160 is ``2048 x T' x 5 x 5`` per clip, ``T' = 1`` for 16-frame clips
(four temporal max-pools of stride 2, Sec. 3.3) and ``clip_len / 16`` for longer ones; ``res4_last`` is
``1024 x T' x 10 x 10`` (``T' = 2`` at 16 frames).  Without a pyramid every ``(t, h, w)`` cell is one descriptor:
``T' H W`` per clip (25 for res5c), in ``(t, h, w)`` row-major order.  With a spatial pyramid ``levels``, each time
step's ``H x W`` map is max-pooled into ``l x l`` cells for every level ``l`` (adaptive max pooling: cell ``i``
spans ``[floor(i H / l), ceil((i + 1) H / l))``, so cells overlap where ``l`` does not divide ``H``), giving
``T' * sum(l^2)`` descriptors per clip ordered by time, level (as given) and cell (row-major).  This is the
spatial pyramid of the released FV-VAE code for video frames (``+utils/activations_spp.m``: max-pooling windows of
2, 3 and 4 with strides 1, 2 and 3, and the global max, over VGG19's ``7 x 7`` pool5 map, 50 descriptors per frame):
on a ``7 x 7`` map, levels ``(6, 3, 2, 1)`` give exactly those windows; on res5c's ``5 x 5``, levels ``(4, 2, 1)``
are the same construction (2 x 2 windows of stride 1, 3 x 3 windows of stride 2, the global max: 21 per clip), and
``(2, 1)`` the brief's "1 + 4 cells" pyramid (4 + 1 = 5 per clip).

**Flip.**  With ``flip`` each clip's cells are averaged with the cells of its mirrored clip, mirrored back, so that
a cell covers the same region of the scene in both (adaptive cells are symmetric under mirroring, so this holds at
every pyramid level); as for the pooled layers, the flip is averaged in, not stored twice.

**PCA** (optional, ``pca_dim``): fitted once per store on a reservoir sample (``pca_descriptors``, seeded, see
:func:`~p3d.representation.encoders.sample_descriptors`) of the descriptors of ``pca_videos`` videos evenly spread
over the extraction list (a class-sorted list such as UCF101's would give one class from its first videos), saved
as ``local_pca.safetensors`` in the store, and applied to every video before the float16 conversion.  A resumed or
sharded run loads it and never fits it again.  The PCA sees no labels; it sees the videos of the list given to
``p3d extract`` -- to keep test videos out of it as well, extract the training list first, then the test list into
the same store (the second run reuses the PCA).

**Disk** per video: ``clips x positions x (2 D + 10)`` bytes (float16 descriptors, int64 video row, int16 clip).
UCF101 (13,320 videos, 20 clips, res5c 5 x 5, D = 2048): 2.05 MB per video, 27.3 GB; with ``pca_dim`` 512:
0.52 MB, 6.9 GB; with 256: 0.26 MB, 3.5 GB.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p3d.errors import missing_ids_error
from p3d.fileio import atomic_write_bytes, one_line, read_p3d_safetensors
from p3d.representation.store import LOCAL_PREFIX, _read_header, list_parts, read_meta

__all__ = [
    "LocalSpec",
    "LocalPCA",
    "LocalSet",
    "iter_local",
    "local_descriptors",
    "load_local_pca",
    "disk_cost",
    "PCA_NAME",
]

PCA_NAME = "local_pca.safetensors"
PCA_FORMAT = "p3d-local-pca"
PCA_VERSION = 1
STORE_DTYPE = "float16"


@dataclass(frozen=True)
class LocalSpec:
    """Which local descriptors ``p3d extract --local`` keeps (see the module docstring).

    Args:
        layer: a conv-map layer of the model (``res5c``, ``res4_last``, ...).
        pyramid: spatial pyramid levels (grid sizes, e.g. ``(4, 2, 1)``); empty: every position.
        pca_dim: reduce to this many principal components before storing (None: keep ``C``).
        pca_videos: videos (evenly spread over the extraction list) whose descriptors the PCA is fitted on.
        pca_descriptors: reservoir size of the PCA's descriptor sample.
        seed: seed of the reservoir sample.
    """

    layer: str = "res5c"
    pyramid: tuple[int, ...] = ()
    pca_dim: int | None = None
    pca_videos: int = 100
    pca_descriptors: int = 50_000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "pyramid", tuple(int(level) for level in self.pyramid))
        if any(level < 1 for level in self.pyramid) or len(set(self.pyramid)) != len(self.pyramid):
            raise ValueError(f"local pyramid levels must be distinct grid sizes >= 1, got {list(self.pyramid)}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ValueError(f"local PCA dimension must be >= 1, got {self.pca_dim}")
        if self.pca_videos < 1 or self.pca_descriptors < 1:
            raise ValueError(
                f"local PCA needs >= 1 video and >= 1 descriptor, got {self.pca_videos}, {self.pca_descriptors}"
            )

    def positions(self, t: int, h: int, w: int) -> int:
        """Descriptors per clip for a ``(T', H, W)`` map."""
        return t * (sum(level * level for level in self.pyramid) if self.pyramid else h * w)

    def to_meta(self) -> dict[str, Any]:
        """The store's ``meta["local"]`` (compared on resume: a store never mixes two kinds of local descriptors)."""
        pca = None
        if self.pca_dim is not None:
            pca = {
                "dim": self.pca_dim,
                "videos": self.pca_videos,
                "descriptors": self.pca_descriptors,
                "seed": self.seed,
                "file": PCA_NAME,
            }
        return {
            "layer": self.layer,
            "pyramid": list(self.pyramid) or None,
            "pooling": "max" if self.pyramid else None,
            "dtype": STORE_DTYPE,
            "pca": pca,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> LocalSpec:
        pca = meta.get("pca") or {}
        return cls(
            layer=meta["layer"],
            pyramid=tuple(meta.get("pyramid") or ()),
            pca_dim=pca.get("dim"),
            pca_videos=pca.get("videos", 100),
            pca_descriptors=pca.get("descriptors", 50_000),
            seed=pca.get("seed", 0),
        )


def parse_pyramid(text: str) -> tuple[int, ...]:
    """``"4,2,1"`` -> ``(4, 2, 1)``; one line naming the flag when malformed."""
    try:
        levels = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise ValueError(f"--local-pyramid: expected comma-separated grid sizes such as 2,1; got {text!r}") from None
    if not levels:
        raise ValueError(f"--local-pyramid: expected comma-separated grid sizes such as 2,1; got {text!r}")
    return levels


# ----------------------------------------------------------------------------------------------------------------
# from a conv map to the local descriptors of each clip


def local_descriptors(maps: Any, pyramid: Sequence[int] = (), flip_of: int | None = None) -> np.ndarray:
    """Local descriptors ``(clips, positions, C)`` float32 of the maps ``(N, C, T, H, W)`` of one video's clips.

    ``pyramid``: levels of the spatial pyramid (module docstring); empty: every position.  ``flip_of``: the maps are
    ``num_clips`` clips followed by their mirrored clips (``N = 2 num_clips``); each clip's cells are averaged
    with its mirror's cells mirrored back.
    """
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(np.asarray(maps), dtype=torch.float32)
    if x.dim() != 5:
        raise ValueError(f"local descriptors need a conv map (N, C, T, H, W), got shape {tuple(x.shape)}")
    t = x.shape[2]
    grids = [F.adaptive_max_pool3d(x, (t, level, level)) for level in pyramid] if pyramid else [x]
    if flip_of is not None:
        if x.shape[0] != 2 * flip_of:
            raise ValueError(f"flip: expected {2 * flip_of} maps (clips then their mirrors), got {x.shape[0]}")
        grids = [0.5 * (g[:flip_of] + g[flip_of:].flip(-1)) for g in grids]
    # (N, C, T, h, w) -> (N, T, h w, C) per level; levels side by side per time step
    cells = [g.permute(0, 2, 3, 4, 1).reshape(g.shape[0], t, -1, g.shape[1]) for g in grids]
    out = torch.cat(cells, dim=2)
    return out.reshape(out.shape[0], -1, out.shape[3]).numpy()


# ----------------------------------------------------------------------------------------------------------------
# the store's PCA


class LocalPCA:
    """PCA of local descriptors: ``y = (x - mean) @ components.T``; ``mean`` ``(C,)``, ``components`` ``(D, C)``.

    Fitted from the covariance of a descriptor sample (float64, ``numpy.linalg.eigh``); each component's sign is
    fixed so that its largest-magnitude entry is positive (a deterministic fit for a given sample).
    """

    def __init__(
        self, mean: np.ndarray, components: np.ndarray, variance: np.ndarray, info: dict[str, Any] | None = None
    ) -> None:
        self.mean = np.asarray(mean, np.float32)
        self.components = np.asarray(components, np.float32)
        self.variance = np.asarray(variance, np.float64)
        self.info = dict(info or {})
        if self.components.ndim != 2 or self.mean.shape != (self.components.shape[1],):
            raise ValueError(f"PCA: mean {self.mean.shape} and components {self.components.shape} do not match")

    @property
    def input_dim(self) -> int:
        return self.components.shape[1]

    @property
    def dim(self) -> int:
        return self.components.shape[0]

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, info: dict[str, Any] | None = None) -> LocalPCA:
        """Fit on a sample ``(M, C)``; ``dim <= min(M, C)``."""
        x = np.asarray(x)
        if x.ndim != 2 or dim > min(x.shape):
            raise ValueError(
                f"local PCA: {dim} components need at least {dim} descriptors of at least {dim} dimensions; "
                f"the sample is {x.shape}"
            )
        mean = x.mean(0, dtype=np.float64)
        cov = np.zeros((x.shape[1], x.shape[1]))
        for a in range(0, len(x), 8192):
            xc = x[a : a + 8192].astype(np.float64) - mean
            cov += xc.T @ xc
        cov /= max(len(x) - 1, 1)
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1][:dim]
        comps = vectors[:, order].T
        comps *= np.sign(comps[np.arange(dim), np.abs(comps).argmax(1)])[:, None]
        return cls(mean, comps, np.maximum(values[order], 0.0), info)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(..., C)`` -> ``(..., D)`` float32."""
        x = np.asarray(x, np.float32)
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"local PCA: expected {self.input_dim}-d descriptors, got shape {x.shape}")
        return (x - self.mean) @ self.components.T

    def save(self, path: str | os.PathLike[str]) -> Path:
        from safetensors.numpy import save

        arrays = {"mean": self.mean, "components": self.components, "variance": self.variance}
        md = {"format": PCA_FORMAT, "version": str(PCA_VERSION), "pca": json.dumps(self.info)}
        return atomic_write_bytes(path, save(arrays, metadata=md))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocalPCA:
        """Read a file written by :meth:`save`; one-line errors naming the file."""
        path = Path(path)
        md, arrays = read_p3d_safetensors(path, PCA_FORMAT, "local PCA file")
        try:
            info = json.loads(md.get("pca", "{}"))
            pca = cls(arrays["mean"], arrays["components"], arrays["variance"], info)
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: invalid local PCA ({one_line(e)})") from None
        if not (np.isfinite(pca.mean).all() and np.isfinite(pca.components).all()):
            raise ValueError(f"{path}: the PCA holds NaN or infinite values")
        return pca


def load_local_pca(store: str | os.PathLike[str], spec: LocalSpec) -> LocalPCA:
    """The PCA of ``store`` for ``spec`` (which must match what it was fitted for)."""
    path = Path(store) / PCA_NAME
    pca = LocalPCA.load(path)
    want = {"layer": spec.layer, "pyramid": list(spec.pyramid), "dim": spec.pca_dim}
    got = {k: pca.info.get(k) for k in want}
    if got != want or pca.dim != spec.pca_dim:
        raise ValueError(f"{path}: fitted for {got}, this extraction asks for {want}; use another output directory")
    return pca


def pca_videos(n: int, count: int) -> np.ndarray:
    """Indices of ``min(n, count)`` videos evenly spread over a list of ``n`` (first and last included)."""
    if n < 1:
        return np.zeros(0, np.int64)
    return np.unique(np.linspace(0, n - 1, min(n, count)).round().astype(np.int64))


# ----------------------------------------------------------------------------------------------------------------
# reading: one video at a time


@dataclass
class _Part:
    path: Path
    ids: list[str]
    starts: np.ndarray  # (n + 1,) row offsets of each video's descriptors in the part's local tensor


class LocalSet:
    """The local descriptors of a feature store, read lazily one video at a time (memory: one video).

    ``len(s)`` videos; ``s[i]`` ``(n_i, D)`` float32 descriptors of video ``s.ids[i]`` (its clips' positions, clip
    after clip); iterating reads the videos in store order.  ``labels`` ``(N,)`` int64 (-1 unknown), ``label_sets``
    every label of each video, ``bad`` the store's unreadable videos, ``meta`` its provenance, ``spec`` the
    :class:`LocalSpec`, ``dim`` ``D``.  This is the ``sample`` :meth:`FVVAEEncoder.fit` takes with labels.

    Args:
        store: a feature store directory written with ``--local`` (or a part-shaped file that holds the row group).
        layer: the local layer (default: the store's; a store holds one).
        ids: only these videos, in this order (each must be in the store).
    """

    def __init__(self, store: str | os.PathLike[str], layer: str | None = None, ids: Sequence[str] | None = None):
        self.source = str(store)
        path = Path(store)
        if path.is_dir():
            meta = read_meta(path)
            if meta is not None and not meta.get("local"):
                raise ValueError(f"{path}: holds no local descriptors (extract them with `p3d extract --local LAYER`)")
            files = list_parts(path)
            if not files:
                raise FileNotFoundError(f"{path}: no feature parts (part-r*.safetensors) in this directory")
        elif path.exists():
            files, meta = [path], None
        else:
            raise FileNotFoundError(f"{path}: no such feature store")
        headers = [_read_header(f) for f in files]
        self.meta: dict[str, Any] = meta if meta is not None else json.loads(headers[0]["meta"])
        local = self.meta.get("local")
        if not local:
            raise ValueError(f"{path}: holds no local descriptors (extract them with `p3d extract --local LAYER`)")
        self.spec = LocalSpec.from_meta(local)
        if layer is not None and layer != self.spec.layer:
            raise ValueError(f"{path}: holds local descriptors of layer {self.spec.layer!r}, not {layer!r}")
        self.layer = self.spec.layer
        self._key = f"{LOCAL_PREFIX}.{self.layer}"
        self._parts: list[_Part] = []
        self._where: list[tuple[int, int]] = []  # (part number, video row in the part)
        self.ids: list[str] = []
        labels: list[int] = []
        self.label_sets: list[tuple[int, ...]] = []
        self.bad: dict[str, str] = {}
        self.dim = 0
        seen: set[str] = set()
        for f, md in zip(files, headers, strict=True):
            part_ids = [str(v) for v in json.loads(md["ids"])]
            part_labels = json.loads(md["labels"])
            multi = json.loads(md["multi_labels"]) if "multi_labels" in md else None
            self.bad.update(json.loads(md.get("bad", "{}")))
            if not part_ids:
                continue
            starts = self._index_part(f, len(part_ids))
            self._parts.append(_Part(f, part_ids, starts))
            for r, vid in enumerate(part_ids):
                if vid in seen:
                    continue  # a duplicate (two writers did the same video): the first copy, as read_features
                seen.add(vid)
                self.ids.append(vid)
                self._where.append((len(self._parts) - 1, r))
                lab = part_labels[r]
                labels.append(-1 if lab is None else int(lab))
                self.label_sets.append(
                    tuple(int(c) for c in multi[r]) if multi is not None else (() if lab is None else (int(lab),))
                )
        for vid in seen:
            self.bad.pop(vid, None)
        self.labels = np.asarray(labels, dtype=np.int64)
        self._row = {vid: i for i, vid in enumerate(self.ids)}
        self._handle: tuple[int, Any] | None = None
        if ids is not None:
            self._select(self.rows(ids, "the id list"))

    def _index_part(self, f: Path, n: int) -> np.ndarray:
        from safetensors import safe_open

        with safe_open(str(f), framework="np") as h:
            keys = set(h.keys())
            if self._key not in keys:
                raise ValueError(
                    f"{f}: no local descriptors {self._key!r} in this part (`p3d merge-features` does not copy "
                    f"them: give the store directory)"
                )
            shape = h.get_slice(self._key).get_shape()
            owner = h.get_tensor(f"{LOCAL_PREFIX}_video")
        if len(shape) != 2 or owner.shape != (shape[0],):
            raise ValueError(f"{f}: local descriptors {shape} and local_video {owner.shape} do not match")
        if self.dim and shape[1] != self.dim:
            raise ValueError(f"{f}: local descriptors are {shape[1]}-d, other parts {self.dim}-d")
        self.dim = int(shape[1])
        if len(owner) and (np.any(np.diff(owner) < 0) or owner[0] < 0 or owner[-1] >= n):
            raise ValueError(f"{f}: local_video rows are not grouped by video 0..{n - 1}")
        starts = np.searchsorted(owner, np.arange(n + 1))
        if np.any(np.diff(starts) == 0):
            raise ValueError(f"{f}: a video of this part has no local descriptors")
        return starts

    def _select(self, rows: np.ndarray) -> None:
        self.ids = [self.ids[r] for r in rows]
        self.labels = self.labels[rows]
        self.label_sets = [self.label_sets[r] for r in rows]
        self._where = [self._where[r] for r in rows]
        self._row = {vid: i for i, vid in enumerate(self.ids)}

    def rows(self, ids: Sequence[str], what: str = "the id list") -> np.ndarray:
        """Positions of ``ids`` in this set; one error naming up to 5 missing ids."""
        missing = [v for v in ids if v not in self._row]
        if missing:
            raise missing_ids_error(missing, what, f"the local descriptors of {self.source}", len(self.ids))
        return np.array([self._row[v] for v in ids], dtype=np.int64)

    def subset(self, ids: Sequence[str]) -> LocalSet:
        """A view of the videos ``ids`` (in that order), sharing this set's index."""
        view = object.__new__(LocalSet)
        view.__dict__.update(self.__dict__)
        view._handle = None
        view._select(self.rows(ids))
        return view

    def __len__(self) -> int:
        return len(self.ids)

    def count(self, i: int) -> int:
        """Number of descriptors of video ``i``."""
        p, r = self._where[i]
        starts = self._parts[p].starts
        return int(starts[r + 1] - starts[r])

    @property
    def descriptors(self) -> int:
        """Total number of descriptors of the videos of this set."""
        return sum(self.count(i) for i in range(len(self)))

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"video {i} of {len(self)}")
        p, r = self._where[i % len(self)]
        if self._handle is None or self._handle[0] != p:
            from safetensors import safe_open

            self._handle = (p, safe_open(str(self._parts[p].path), framework="np"))
        starts = self._parts[p].starts
        return self._handle[1].get_slice(self._key)[int(starts[r]) : int(starts[r + 1])].astype(np.float32)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None}


def iter_local(
    store: str | os.PathLike[str], layer: str | None = None, ids: Sequence[str] | None = None
) -> Iterator[tuple[str, int, np.ndarray]]:
    """``(video id, label or -1, (n, D) float32 descriptors)`` of every video of a store with local descriptors,
    streamed one video at a time (``ids``: only those, in that order)."""
    s = LocalSet(store, layer, ids)
    for i, x in enumerate(s):
        yield s.ids[i], int(s.labels[i]), x


def disk_cost(clips: int, positions: int, dim: int, videos: int = 1) -> int:
    """Bytes of local descriptors of ``videos`` videos: ``clips x positions`` rows of ``2 dim`` bytes (float16) plus
    10 (``local_video`` int64, ``local_clip`` int16); part headers add a few kB per part."""
    return videos * clips * positions * (2 * dim + 10)
