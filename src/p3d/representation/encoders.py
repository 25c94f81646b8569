"""Encoders of local descriptors: one video's set of local descriptors -> one fixed-length vector.

The P3D paper (Sec. 5, UCF101) keeps the spatial activations of a layer (res5c: 2048 x 5 x 5 per 160 x 160 clip,
i.e. 25 local descriptors of 2048-d per clip) and encodes each video's set of local descriptors with the authors'
FV-VAE (90.5 % against 88.6 % for pool5).  This module provides that encoder and the two classical ones it is
compared with, behind one interface::

    enc = FisherVectorEncoder(components=64, pca_dim=256).fit(sample, ids=train_ids)   # sample: (M, D)
    v = enc.encode(local)                  # (n_i, D) descriptors of ONE video -> (enc.dim,) float32
    V = enc.encode_many(videos)            # iterable of (n_i, D) -> (N, enc.dim) float32, streamed in chunks
    enc.save("fv.safetensors");  enc = load_encoder("fv.safetensors")

* :class:`FisherVectorEncoder` -- the improved Fisher vector (Perronnin, Sanchez & Mensink, ECCV 2010): a diagonal
  GMM, gradients with respect to the means and standard deviations normalised by the GMM's Fisher information
  (the ``1 / sqrt(w_k)`` and ``1 / sqrt(2 w_k)`` factors), averaged over the descriptors, then signed power
  (``alpha = 0.5``) and L2 normalisation.
* :class:`VLADEncoder` -- VLAD (Jegou et al., CVPR 2010): residual sums to the nearest k-means centre, with the
  intra-normalisation of Arandjelovic & Zisserman (CVPR 2013), an optional signed power, and L2.
* :class:`FVVAEEncoder` -- FV-VAE (Qiu, Yao & Mei, "Deep Quantization: Encoding Convolutional Activations with Deep
  Generative Model", CVPR 2017): the Fisher score of a variational auto-encoder of the descriptors, i.e. the
  gradient of the descriptor's log-likelihood under the decoder with respect to the decoder's parameters,
  averaged over the video; the VAE is trained on the descriptors, then end to end with a classification loss.

FV and VLAD optionally reduce the descriptors with PCA (optionally whitened) fitted on the same sample, as is
usual for 2048-d CNN descriptors.  Fitting uses a sample of descriptors of the training videos; use
:func:`sample_descriptors` to draw it while streaming, so memory does not grow with the dataset.  ``fit`` records
what it saw (``fitted_on``: descriptor count, video count, a SHA-256 of the sorted training ids, see
:func:`ids_digest`) so a caller can prove that no test video was used.

An encoder is saved as ONE ``.safetensors`` file: the arrays as tensors and the configuration as JSON in the
header metadata (``format = "p3d-encoder"``), written atomically through :mod:`p3d.fileio`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from p3d.fileio import atomic_write_bytes, one_line, read_p3d_safetensors

__all__ = [
    "LocalEncoder",
    "FisherVectorEncoder",
    "VLADEncoder",
    "FVVAEEncoder",
    "ENCODERS",
    "load_encoder",
    "sample_descriptors",
    "ids_digest",
]

FORMAT = "p3d-encoder"
VERSION = 1
_DEFAULT_CHUNK = 4096  # descriptors encoded together by encode_many (bounds the temporaries)


# ----------------------------------------------------------------------------------------------------------------
# helpers shared by all encoders


def ids_digest(ids: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted, newline-joined video ids: what ``fitted_on["ids_sha256"]`` records, so that
    the set of training videos an encoder was fitted on can be compared without storing the ids."""
    return hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()


def sample_descriptors(arrays: Iterable[Any], max_descriptors: int, seed: int = 0) -> np.ndarray:
    """A uniform random sample of at most ``max_descriptors`` rows of all ``arrays``, drawn while streaming.

    Reservoir sampling (Vitter's algorithm R, vectorised per array): every row of the stream ends in the sample
    with the same probability ``min(1, max_descriptors / total)``, and memory is the reservoir
    (``max_descriptors x D`` float32) plus one array, whatever the number of videos.  Deterministic for a seed
    and a stream.

    Args:
        arrays: iterable of ``(n_i, D)`` arrays (e.g. the local descriptors of the training videos, read one by
            one from a store).
        max_descriptors: reservoir size ``M``.
        seed: seed of the NumPy generator.

    Returns:
        ``(min(M, total), D)`` float32; the rows in stream order while the stream is shorter than ``M``.
    """
    if max_descriptors < 1:
        raise ValueError(f"max_descriptors must be >= 1, got {max_descriptors}")
    rng = np.random.default_rng(seed)
    reservoir: np.ndarray | None = None
    seen = 0
    for k, a in enumerate(arrays):
        a = np.asarray(a)
        if a.ndim != 2:
            raise ValueError(f"array {k}: descriptors must be 2-D (n, D), got shape {a.shape}")
        if reservoir is None:
            reservoir = np.empty((max_descriptors, a.shape[1]), np.float32)
        elif a.shape[1] != reservoir.shape[1]:
            raise ValueError(f"array {k}: descriptors are {a.shape[1]}-d, the previous ones {reservoir.shape[1]}-d")
        n = len(a)
        fill = min(n, max(0, max_descriptors - seen))
        reservoir[seen : seen + fill] = a[:fill]
        if fill < n:
            t = seen + np.arange(fill, n)  # global index of each remaining row
            slot = rng.integers(0, t + 1)  # row t replaces slot j ~ U{0..t} when j < M
            hit = np.nonzero(slot < max_descriptors)[0]
            if len(hit):
                # sequential semantics: a slot chosen twice keeps the later row
                slots_rev = slot[hit][::-1]
                _, first_rev = np.unique(slots_rev, return_index=True)
                keep = hit[::-1][first_rev]
                reservoir[slot[keep]] = a[fill + keep]
        seen += n
    if reservoir is None:
        raise ValueError("sample_descriptors: the stream holds no arrays")
    return reservoir[: min(seen, max_descriptors)]


def _as_matrix(sample: Any, dtype: type = np.float64, what: str = "sample") -> np.ndarray:
    """``(M, D)`` array of ``dtype`` from an array or a sequence of ``(n_i, D)`` arrays (concatenated)."""
    if hasattr(sample, "shape"):
        x = np.asarray(sample, dtype=dtype)
    else:
        parts = [np.asarray(a, dtype=dtype) for a in sample]
        if not parts:
            raise ValueError(f"{what}: no descriptor arrays")
        for k, a in enumerate(parts):
            if a.ndim != 2:
                raise ValueError(f"{what}[{k}]: descriptors must be 2-D (n, D), got shape {a.shape}")
        x = np.concatenate(parts)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty (M, D) array of descriptors, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return x


def _n_sets(sample: Any) -> int | None:
    """Number of videos when ``sample`` is a sequence of per-video arrays, None for one ``(M, D)`` array."""
    return None if hasattr(sample, "shape") else len(sample)


def _power_l2(v: np.ndarray, alpha: float | None) -> np.ndarray:
    """Signed power ``sign(v) |v|^alpha`` (skipped for None), then L2 per row; rows of zeros stay zero."""
    if alpha is not None:
        v = np.sign(v) * np.abs(v) ** alpha
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


class _Projection:
    """PCA (optionally whitened) folded into ``y = (x - mean) @ matrix.T``; ``matrix`` ``(P, D)``."""

    def __init__(self, mean: np.ndarray, matrix: np.ndarray) -> None:
        self.mean = np.asarray(mean, np.float64)
        self.matrix = np.asarray(matrix, np.float64)
        self._mean32, self._matrix32 = self.mean.astype(np.float32), self.matrix.astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, whiten: bool, seed: int) -> _Projection:
        from sklearn.decomposition import PCA

        if dim > min(x.shape):
            raise ValueError(
                f"pca_dim={dim} needs at least {dim} descriptors of at least {dim} dimensions; "
                f"the sample is {x.shape[0]} x {x.shape[1]}"
            )
        pca = PCA(n_components=dim, random_state=seed).fit(x)
        matrix = pca.components_.copy()
        if whiten:
            matrix /= np.sqrt(np.maximum(pca.explained_variance_, 1e-12))[:, None]
        return cls(pca.mean_, matrix)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(n, D) -> (n, P)`` float64; float32 input is projected in float32 (2x faster, errors ~1e-6)."""
        if x.dtype == np.float32:
            return ((x - self._mean32) @ self._matrix32.T).astype(np.float64)
        return (np.asarray(x, np.float64) - self.mean) @ self.matrix.T


# ----------------------------------------------------------------------------------------------------------------
# the common interface


class LocalEncoder:
    """Base of the encoders: validation, streaming ``encode_many``, save/load.  Subclasses implement ``fit``,
    ``dim`` and ``_encode_batch`` (a list of validated ``(n_i, D)`` arrays -> ``(B, dim)`` float32)."""

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self.input_dim: int | None = None  # D, set by fit
        self.fitted_on: dict[str, Any] | None = None

    # -- to implement -------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Length ``E`` of an encoding."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Hyper-parameters (JSON-able); ``type(self)(**config())`` rebuilds an unfitted twin."""
        raise NotImplementedError

    def _arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        raise NotImplementedError

    def _encode_batch(self, sets: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.input_dim is not None

    def _record_fit(self, descriptors: int, ids: Sequence[str] | None, videos: int | None = None) -> None:
        if ids is not None:
            ids = [str(i) for i in ids]
            videos = len(ids)
        self.fitted_on = {
            "descriptors": int(descriptors),
            "videos": videos,
            "ids_sha256": ids_digest(ids) if ids is not None else None,
        }

    def _check_set(self, local: Any, where: str) -> np.ndarray:
        if not self.is_fitted:
            raise ValueError(f"{type(self).__name__} is not fitted; call fit() or load_encoder() first")
        x = np.asarray(local)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"{where}: expected local descriptors of shape (n, {self.input_dim}), got {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{where}: a video needs at least one local descriptor, got 0")
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: local descriptors contain NaN or infinite values")
        return x

    def encode(self, local: Any) -> np.ndarray:
        """Encode ONE video: ``(n, D)`` local descriptors -> ``(dim,)`` float32."""
        return self._encode_batch([self._check_set(local, "encode")])[0]

    def iter_encode(self, sets: Iterable[Any], batch_descriptors: int = _DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """Encode a stream of videos, yielding ``(b, dim)`` float32 blocks in input order.

        Videos are grouped until a block holds ``batch_descriptors`` descriptors (a video is never split), so
        memory is bounded by one block whatever the stream's length; ``sets`` may be a generator reading a store.
        """
        block: list[np.ndarray] = []
        count = 0
        for k, local in enumerate(sets):
            x = self._check_set(local, f"video {k}")
            block.append(x)
            count += len(x)
            if count >= batch_descriptors:
                yield self._encode_batch(block)
                block, count = [], 0
        if block:
            yield self._encode_batch(block)

    def encode_many(
        self, sets: Iterable[Any], *, out: np.ndarray | None = None, batch_descriptors: int = _DEFAULT_CHUNK
    ) -> np.ndarray:
        """Encode many videos -> ``(N, dim)`` float32 (streamed, see :meth:`iter_encode`).

        ``out``: an ``(N, dim)`` array to write into (e.g. a ``np.memmap`` when ``N x dim`` does not fit in
        memory); otherwise one is allocated (for ``sets`` without a length, blocks are gathered then stacked).
        """
        if out is None and hasattr(sets, "__len__"):
            out = np.empty((len(sets), self.dim), np.float32)  # type: ignore[arg-type]
        if out is not None:
            if out.ndim != 2 or out.shape[1] != self.dim:
                raise ValueError(f"out: expected shape (N, {self.dim}), got {out.shape}")
            row = 0
            for block in self.iter_encode(sets, batch_descriptors):
                if row + len(block) > len(out):
                    raise ValueError(f"out: has {len(out)} rows, the stream holds more videos")
                out[row : row + len(block)] = block
                row += len(block)
            if row != len(out):
                raise ValueError(f"out: has {len(out)} rows, the stream held {row} videos")
            return out
        blocks = list(self.iter_encode(sets, batch_descriptors))
        return np.concatenate(blocks) if blocks else np.empty((0, self.dim), np.float32)

    # -- persistence -------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted encoder to one ``.safetensors`` file (arrays + JSON header), atomically."""
        from safetensors.numpy import save

        if not self.is_fitted:
            raise ValueError(f"{path}: cannot save an unfitted {type(self).__name__}")
        header = {
            "class": self.kind,
            "config": self.config(),
            "input_dim": self.input_dim,
            "dim": self.dim,
            "fitted_on": self.fitted_on,
        }
        arrays = {k: np.ascontiguousarray(v) for k, v in self._arrays().items()}
        data = save(arrays, metadata={"format": FORMAT, "version": str(VERSION), "encoder": json.dumps(header)})
        return atomic_write_bytes(path, data)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        state = f"fitted on {self.fitted_on}" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({args}) [{state}]"


def load_encoder(path: str | os.PathLike[str], device: str | None = None) -> LocalEncoder:
    """Load an encoder written by :meth:`LocalEncoder.save`; returns an instance of the right class.

    ``device``: where an FV-VAE runs (default: the CPU); ignored by FV and VLAD.  Raises
    ``FileNotFoundError`` / ``ValueError`` with one line naming the file and the problem.
    """
    path = Path(path)
    md, arrays = read_p3d_safetensors(path, FORMAT, "encoder file", VERSION)
    try:
        header = json.loads(md["encoder"])
        kind, config, input_dim = header["class"], dict(header["config"]), int(header["input_dim"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid encoder header ({one_line(e)})") from None
    if kind not in ENCODERS:
        raise ValueError(f"{path}: unknown encoder class {kind!r}; known: {sorted(ENCODERS)}")
    cls = ENCODERS[kind]
    if cls is FVVAEEncoder:  # where it was trained is no concern of where it runs
        config["device"] = device or "cpu"
    try:
        enc = cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid {kind} configuration ({one_line(e)})") from None
    enc.input_dim = input_dim
    enc._set_arrays(arrays, str(path))
    enc.fitted_on = header.get("fitted_on")
    if enc.dim != header.get("dim"):
        raise ValueError(f"{path}: header says dim={header.get('dim')}, the arrays give {enc.dim}")
    return enc


def _take(arrays: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...] | None], where: str) -> dict:
    """Check that ``arrays`` holds exactly the names of ``shapes`` (None: any shape) with those shapes."""
    missing = sorted(set(shapes) - set(arrays))
    extra = sorted(set(arrays) - set(shapes))
    if missing or extra:
        raise ValueError(f"{where}: arrays missing {missing}, unexpected {extra}")
    for k, shape in shapes.items():
        if shape is not None and tuple(arrays[k].shape) != shape:
            raise ValueError(f"{where}: array {k!r} has shape {tuple(arrays[k].shape)}, expected {shape}")
    return arrays


# ----------------------------------------------------------------------------------------------------------------
# Fisher vector


class FisherVectorEncoder(LocalEncoder):
    """Improved Fisher vector (Perronnin, Sanchez & Mensink, ECCV 2010) on a diagonal GMM.

    For the ``n`` descriptors ``x_i`` of a video (after the optional PCA), posteriors ``q_ik`` under the GMM
    ``(w_k, mu_k, sigma_k^2)`` and ``N = n``::

        u_k = 1 / (N sqrt(w_k))   sum_i q_ik (x_i - mu_k) / sigma_k                 # d/d mu_k
        v_k = 1 / (N sqrt(2 w_k)) sum_i q_ik [((x_i - mu_k) / sigma_k)^2 - 1]       # d/d sigma_k

    (the gradients of the average log-likelihood, whitened by the diagonal closed-form approximation of the
    Fisher information; VLFeat's ``vl_fisher`` uses the same formulas).  The encoding is
    ``[u_1 .. u_K, v_1 .. v_K]`` (``E = 2 K P``, ``P`` = PCA size or ``D``), then ``sign(z) |z|^power`` and L2.

    Args:
        components: number ``K`` of Gaussians (64 to 256 in the literature).
        pca_dim: reduce descriptors to this many principal components first (None: keep ``D``).
        whiten: whiten the PCA components (divide by the square roots of their variances).
        power: exponent of the signed power normalisation (0.5 in the paper; None: none).
        max_iter, reg_covar, n_init: passed to :class:`sklearn.mixture.GaussianMixture` (diagonal, k-means init).
        seed: seeds the PCA and the GMM (fitting is deterministic for a seed and a sample).
    """

    kind = "fv"

    def __init__(
        self,
        components: int = 64,
        pca_dim: int | None = None,
        whiten: bool = False,
        power: float | None = 0.5,
        max_iter: int = 100,
        reg_covar: float = 1e-6,
        n_init: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if components < 1:
            raise ValueError(f"components must be >= 1, got {components}")
        if pca_dim is not None and pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1 or None, got {pca_dim}")
        if power is not None and not 0 < power <= 1:
            raise ValueError(f"power must be in (0, 1] or None, got {power}")
        self.components, self.pca_dim, self.whiten, self.power = components, pca_dim, whiten, power
        self.max_iter, self.reg_covar, self.n_init, self.seed = max_iter, reg_covar, n_init, seed
        self.pca: _Projection | None = None
        self.weights = self.means = self.variances = None  # (K,), (K, P), (K, P) float64 once fitted

    def config(self) -> dict[str, Any]:
        return {
            "components": self.components,
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "power": self.power,
            "max_iter": self.max_iter,
            "reg_covar": self.reg_covar,
            "n_init": self.n_init,
            "seed": self.seed,
        }

    @property
    def dim(self) -> int:
        if self.means is None:
            raise ValueError("FisherVectorEncoder is not fitted: its dimension is not known yet")
        return 2 * self.means.size

    def fit(self, sample: Any, *, ids: Sequence[str] | None = None) -> FisherVectorEncoder:
        """Fit the PCA (if any) and the GMM on ``sample`` ``(M, D)`` (or a sequence of ``(n_i, D)`` arrays);
        ``ids``: the training videos the sample was drawn from (recorded as a count and a hash)."""
        from sklearn.mixture import GaussianMixture

        x = _as_matrix(sample)
        if x.shape[0] < self.components:
            raise ValueError(f"sample: {x.shape[0]} descriptors cannot fit {self.components} Gaussians")
        self.pca = _Projection.fit(x, self.pca_dim, self.whiten, self.seed) if self.pca_dim else None
        y = self.pca(x) if self.pca else x
        gmm = GaussianMixture(
            self.components,
            covariance_type="diag",
            reg_covar=self.reg_covar,
            max_iter=self.max_iter,
            n_init=self.n_init,
            random_state=self.seed,
        ).fit(y)
        self.weights, self.means, self.variances = gmm.weights_, gmm.means_, gmm.covariances_
        self.input_dim = x.shape[1]
        self._record_fit(x.shape[0], ids, _n_sets(sample))
        return self

    @classmethod
    def from_gmm(cls, weights: Any, means: Any, variances: Any, *, power: float | None = 0.5) -> FisherVectorEncoder:
        """An encoder on a given diagonal GMM (``(K,)``, ``(K, D)``, ``(K, D)``), without PCA."""
        enc = cls(components=len(weights), power=power)
        enc.input_dim = np.shape(means)[1]
        enc._set_arrays(
            {"weights": np.asarray(weights), "means": np.asarray(means), "variances": np.asarray(variances)}, "from_gmm"
        )
        enc.fitted_on = {"descriptors": 0, "videos": None, "ids_sha256": None}
        return enc

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights, "means": self.means, "variances": self.variances}
        if self.pca is not None:
            arrays.update(pca_mean=self.pca.mean, pca_matrix=self.pca.matrix)
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        k, p = self.components, self.pca_dim or self.input_dim
        shapes: dict[str, tuple[int, ...] | None] = {"weights": (k,), "means": (k, p), "variances": (k, p)}
        if self.pca_dim:
            shapes.update(pca_mean=(self.input_dim,), pca_matrix=(self.pca_dim, self.input_dim))
        arrays = _take(arrays, shapes, where)
        w, mu, var = (np.asarray(arrays[n], np.float64) for n in ("weights", "means", "variances"))
        if (w <= 0).any() or (var <= 0).any() or not np.isfinite(mu).all():
            raise ValueError(f"{where}: GMM weights and variances must be positive and means finite")
        self.weights, self.means, self.variances = w, mu, var
        self.pca = _Projection(arrays["pca_mean"], arrays["pca_matrix"]) if "pca_mean" in arrays else None

    def posteriors(self, y: np.ndarray) -> np.ndarray:
        """Soft assignments ``q_ik`` ``(n, K)`` of projected descriptors ``y`` ``(n, P)`` (log-sum-exp, float64)."""
        inv = 1.0 / self.variances
        # sum_d (y - mu)^2 / var  =  y^2 @ inv.T - 2 y @ (mu * inv).T + sum_d mu^2 * inv
        maha = (y * y) @ inv.T - 2.0 * y @ (self.means * inv).T + (self.means**2 * inv).sum(1)
        log_p = np.log(self.weights) - 0.5 * (np.log(self.variances).sum(1) + maha)  # the 2 pi term cancels
        log_p -= log_p.max(1, keepdims=True)
        q = np.exp(log_p)
        return q / q.sum(1, keepdims=True)

    def _encode_batch(self, sets: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate(sets)
        y = self.pca(x) if self.pca is not None else x.astype(np.float64)
        q = self.posteriors(y)
        sigma = np.sqrt(self.variances)
        out = np.empty((len(sets), self.dim))
        start = 0
        for b, s in enumerate(sets):
            n = len(s)
            qs, ys = q[start : start + n], y[start : start + n]
            start += n
            s0 = qs.sum(0)[:, None]  # (K, 1)
            s1 = qs.T @ ys  # (K, P)
            s2 = qs.T @ (ys * ys)
            u = (s1 - s0 * self.means) / sigma / (n * np.sqrt(self.weights)[:, None])
            v = ((s2 - 2 * self.means * s1 + s0 * self.means**2) / self.variances - s0) / (
                n * np.sqrt(2 * self.weights)[:, None]
            )
            out[b] = np.concatenate([u.ravel(), v.ravel()])
        return _power_l2(out, self.power).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# VLAD


class VLADEncoder(LocalEncoder):
    """VLAD (Jegou, Douze, Schmid & Perez, CVPR 2010) with intra-normalisation (Arandjelovic & Zisserman, CVPR
    2013).

    For the descriptors ``x_i`` of a video (after the optional PCA) and k-means centres ``c_k``::

        v_k = sum_{i : NN(x_i) = k} (x_i - c_k)        # residual sum per centre, (K, P)
        v_k <- v_k / ||v_k||                            # intra-normalisation (empty centres stay 0)
        v   <- sign(v) |v|^power                        # optional (None by default)
        v   <- v / ||v||                                # L2

    ``E = K P``.  Args: ``centres`` ``K``; ``pca_dim``, ``whiten`` as for :class:`FisherVectorEncoder`;
    ``intra_norm``; ``power``; ``max_iter``, ``n_init`` for :class:`sklearn.cluster.KMeans`; ``seed``.
    """

    kind = "vlad"

    def __init__(
        self,
        centres: int = 64,
        pca_dim: int | None = None,
        whiten: bool = False,
        intra_norm: bool = True,
        power: float | None = None,
        max_iter: int = 300,
        n_init: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if centres < 1:
            raise ValueError(f"centres must be >= 1, got {centres}")
        if pca_dim is not None and pca_dim < 1:
            raise ValueError(f"pca_dim must be >= 1 or None, got {pca_dim}")
        if power is not None and not 0 < power <= 1:
            raise ValueError(f"power must be in (0, 1] or None, got {power}")
        self.centres, self.pca_dim, self.whiten = centres, pca_dim, whiten
        self.intra_norm, self.power = intra_norm, power
        self.max_iter, self.n_init, self.seed = max_iter, n_init, seed
        self.pca: _Projection | None = None
        self.codebook: np.ndarray | None = None  # (K, P) float64

    def config(self) -> dict[str, Any]:
        return {
            "centres": self.centres,
            "pca_dim": self.pca_dim,
            "whiten": self.whiten,
            "intra_norm": self.intra_norm,
            "power": self.power,
            "max_iter": self.max_iter,
            "n_init": self.n_init,
            "seed": self.seed,
        }

    @property
    def dim(self) -> int:
        if self.codebook is None:
            raise ValueError("VLADEncoder is not fitted: its dimension is not known yet")
        return self.codebook.size

    def fit(self, sample: Any, *, ids: Sequence[str] | None = None) -> VLADEncoder:
        """Fit the PCA (if any) and k-means on ``sample`` ``(M, D)`` (or a sequence of ``(n_i, D)`` arrays)."""
        from sklearn.cluster import KMeans

        x = _as_matrix(sample)
        if x.shape[0] < self.centres:
            raise ValueError(f"sample: {x.shape[0]} descriptors cannot fit {self.centres} centres")
        self.pca = _Projection.fit(x, self.pca_dim, self.whiten, self.seed) if self.pca_dim else None
        y = self.pca(x) if self.pca else x
        km = KMeans(self.centres, n_init=self.n_init, max_iter=self.max_iter, random_state=self.seed).fit(y)
        self.codebook = km.cluster_centers_.astype(np.float64)
        self.input_dim = x.shape[1]
        self._record_fit(x.shape[0], ids, _n_sets(sample))
        return self

    @classmethod
    def from_centres(cls, centres: Any, *, intra_norm: bool = True, power: float | None = None) -> VLADEncoder:
        """An encoder on given centres ``(K, D)``, without PCA."""
        c = np.asarray(centres, np.float64)
        enc = cls(centres=len(c), intra_norm=intra_norm, power=power)
        enc.input_dim = c.shape[1]
        enc._set_arrays({"centres": c}, "from_centres")
        enc.fitted_on = {"descriptors": 0, "videos": None, "ids_sha256": None}
        return enc

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"centres": self.codebook}
        if self.pca is not None:
            arrays.update(pca_mean=self.pca.mean, pca_matrix=self.pca.matrix)
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        p = self.pca_dim or self.input_dim
        shapes: dict[str, tuple[int, ...] | None] = {"centres": (self.centres, p)}
        if self.pca_dim:
            shapes.update(pca_mean=(self.input_dim,), pca_matrix=(self.pca_dim, self.input_dim))
        arrays = _take(arrays, shapes, where)
        self.codebook = np.asarray(arrays["centres"], np.float64)
        if not np.isfinite(self.codebook).all():
            raise ValueError(f"{where}: centres must be finite")
        self.pca = _Projection(arrays["pca_mean"], arrays["pca_matrix"]) if "pca_mean" in arrays else None

    def assign(self, y: np.ndarray) -> np.ndarray:
        """Index ``(n,)`` of the nearest centre of each projected descriptor (ties: the lowest index)."""
        c = self.codebook
        d2 = (y * y).sum(1, keepdims=True) - 2.0 * y @ c.T + (c * c).sum(1)
        return d2.argmin(1)

    def _encode_batch(self, sets: list[np.ndarray]) -> np.ndarray:
        x = np.concatenate(sets)
        y = self.pca(x) if self.pca is not None else x.astype(np.float64)
        nearest = self.assign(y)
        k = len(self.codebook)
        out = np.empty((len(sets), k, self.codebook.shape[1]))
        start = 0
        for b, s in enumerate(sets):
            a, ys = nearest[start : start + len(s)], y[start : start + len(s)]
            start += len(s)
            onehot = np.zeros((len(s), k))
            onehot[np.arange(len(s)), a] = 1.0
            out[b] = onehot.T @ ys - onehot.sum(0)[:, None] * self.codebook
        if self.intra_norm:
            out /= np.maximum(np.linalg.norm(out, axis=2, keepdims=True), 1e-12)
        return _power_l2(out.reshape(len(sets), -1), self.power).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# FV-VAE


def _xavier(shape: tuple[int, int], gen: Any) -> Any:
    import torch

    bound = math.sqrt(6.0 / (shape[0] + shape[1]))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


class FVVAEEncoder(LocalEncoder):
    """FV-VAE (Qiu, Yao & Mei, CVPR 2017): the Fisher score of a variational auto-encoder of the descriptors.

    Model (the authors' released training prototxt, ``fv-vae/fv-vae``, VGG19 on UCF101)::

        encoder   mu_z = MLP(x)                 D -> hidden (ReLU) ... -> latent   ("encoder1" 512 ReLU, "encoder2" 256)
        posterior q(z|x) = N(mu_z, diag(s_z^2))  s_z one learned vector ("z_sigma": a bias on zeros, exp)
        decoder   x_hat = ReLU(W z + b)          latent -> D                        ("decoder" + "decoder_relu")
        p(x|z)    = N(x_hat, diag(s_x^2))        s_x one learned vector ("x_sigma", "GaussionLoss")

    trained on the variational lower bound (reconstruction ``-log p(x|z)`` + KL regulariser), with dropout 0.5
    on the encoder's input ("xt_dropout").  With labels, a classifier on the sampled latent code of every
    descriptor, max-pooled over the video's descriptors ("scoremap" -> global max "score" -> softmax loss; the
    prototxt pools one frame's 50 descriptors, here the ``descriptors_per_set`` drawn from a video), is added and
    everything is trained end to end: ``loss = (rec + KL) / D + cls_weight * CE``.  The classifier sits on the
    latent codes, not on the encoding: that is how the released prototxt trains.

    Encoding (paper Eq. 11, the released ``extract_fv_vae_frame_sequence.m``): the gradient of the log-likelihood
    ``log p(x_i | z_i)`` at ``z_i = mu_z(x_i)`` with respect to the decoder's parameters ``W`` and ``b``::

        r_i = (x_i - x_hat_i) / s_x^2 * [W z_i + b > 0]            # (D,)
        G   = 1/n sum_i r_i [z_i; 1]^T                              # (D, latent + 1): [dW | db]

    divided element-wise by ``sqrt(F)``, the diagonal of the empirical Fisher information ``F = E[g_i^2]`` over
    the fitting sample (the released code approximates it by column L2 norms of the dataset's raw vectors),
    flattened row-major, then signed square root and L2.  ``E = D (latent + 1)``.  The sign is that of the
    log-likelihood's gradient (the released code uses the loss's, ``x_hat - x``: the same up to sign).

    Descriptors are first multiplied by one scale fitted on the sample (unit RMS per element); the released code
    L2-normalises each frame's activation map to the same unit RMS per element ("pool5_norm", scale 158 =
    sqrt(7 * 7 * 512)), which needs the clips' grouping that a descriptor sample does not keep.

    Args:
        latent: latent size (256 in the paper: ``E ~ 256 D``).
        hidden: encoder hidden layer sizes (``(512,)`` in the prototxt).
        dropout: dropout on the encoder's input during training.
        decoder_relu: the decoder's output ReLU (on: CNN activations are non-negative).
        steps: unsupervised training steps of ``batch_size`` descriptors.
        finetune_steps: end-to-end steps (with labels) of ``sets_per_batch`` videos of at most
            ``descriptors_per_set`` random descriptors each.
        lr: Adam learning rate (the paper used AdaDelta).
        cls_weight: weight of the classification loss (the paper's lambda_3; the prototxt's 1e3 multiplies an
            unnormalised sum, here the other terms are per descriptor and dimension).
        sigma_floor: lower bound of ``s_x`` (and ``s_z``), relative to the unit-RMS input.
        device: torch device for training and encoding ("cpu", "cuda", ...).
        seed: seeds initialisation, batches, dropout and sampling (same seed on the CPU: the same encoder, bit for
            bit; on CUDA up to the non-determinism of some kernels).
    """

    kind = "fv-vae"

    def __init__(
        self,
        latent: int = 256,
        hidden: Sequence[int] = (512,),
        dropout: float = 0.5,
        decoder_relu: bool = True,
        steps: int = 2000,
        batch_size: int = 512,
        finetune_steps: int = 1000,
        sets_per_batch: int = 16,
        descriptors_per_set: int = 64,
        lr: float = 1e-3,
        cls_weight: float = 1.0,
        sigma_floor: float = 1e-2,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if latent < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"latent and hidden sizes must be >= 1, got latent={latent}, hidden={list(hidden)}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if min(steps, finetune_steps) < 0 or min(batch_size, sets_per_batch, descriptors_per_set) < 1:
            raise ValueError("steps must be >= 0 and batch sizes >= 1")
        if lr <= 0 or cls_weight < 0 or sigma_floor <= 0:
            raise ValueError(
                f"lr and sigma_floor must be > 0 and cls_weight >= 0, got {lr}, {sigma_floor}, {cls_weight}"
            )
        self.latent, self.hidden, self.dropout = latent, [int(h) for h in hidden], dropout
        self.decoder_relu, self.steps, self.batch_size = decoder_relu, steps, batch_size
        self.finetune_steps, self.sets_per_batch = finetune_steps, sets_per_batch
        self.descriptors_per_set = descriptors_per_set
        self.lr, self.cls_weight, self.sigma_floor = lr, cls_weight, sigma_floor
        self.device, self.seed = str(device), seed
        self.num_classes: int | None = None
        self.params: dict[str, Any] = {}  # name -> torch tensor on self.device (see _init_params)
        self.scale: float = 1.0
        self.history: dict[str, list[float]] = {}

    def config(self) -> dict[str, Any]:
        return {
            "latent": self.latent,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "decoder_relu": self.decoder_relu,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "finetune_steps": self.finetune_steps,
            "sets_per_batch": self.sets_per_batch,
            "descriptors_per_set": self.descriptors_per_set,
            "lr": self.lr,
            "cls_weight": self.cls_weight,
            "sigma_floor": self.sigma_floor,
            "device": self.device,
            "seed": self.seed,
        }

    @property
    def dim(self) -> int:
        if self.input_dim is None:
            raise ValueError("FVVAEEncoder is not fitted: its dimension is not known yet")
        return self.input_dim * (self.latent + 1)

    # -- the model ----------------------------------------------------------------------------------------------
    def _init_params(self, d: int, num_classes: int | None) -> None:
        import torch

        gen = torch.Generator().manual_seed(self.seed)  # CPU generator: the same initial weights on every device
        sizes = [d, *self.hidden, self.latent]
        p: dict[str, Any] = {}
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            p[f"encoder.{i}.weight"] = _xavier((b, a), gen)
            p[f"encoder.{i}.bias"] = torch.zeros(b)
        p["z_log_sigma"] = torch.zeros(self.latent)
        # a small decoder (0.1 x Xavier): the initial model is close to "x ~ N(mean, std^2)", and the noise of the
        # sampled z does not swamp the reconstruction (with full Xavier the latent collapses first on small data)
        p["decoder.weight"] = 0.1 * _xavier((d, self.latent), gen)
        p["decoder.bias"] = torch.zeros(d)
        p["x_log_sigma"] = torch.zeros(d)
        if num_classes is not None:
            p["classifier.weight"] = _xavier((num_classes, self.latent), gen)
            p["classifier.bias"] = torch.zeros(num_classes)
        p["fim"] = torch.ones(d, self.latent + 1)
        self.params = {k: v.to(self.device) for k, v in p.items()}

    def _encoder(self, x: Any) -> Any:
        """``mu_z`` ``(n, latent)`` of scaled descriptors ``x`` ``(n, D)``."""
        h = x
        n_layers = len(self.hidden) + 1
        for i in range(n_layers):
            h = h @ self.params[f"encoder.{i}.weight"].T + self.params[f"encoder.{i}.bias"]
            if i < n_layers - 1:
                h = h.relu()
        return h

    def _decoder_pre(self, z: Any) -> Any:
        """Pre-activation ``W z + b`` ``(n, D)``."""
        return z @ self.params["decoder.weight"].T + self.params["decoder.bias"]

    def _sigma_x(self) -> Any:
        return self.params["x_log_sigma"].clamp_min(math.log(self.sigma_floor)).exp()

    def _sigma_z(self) -> Any:
        return self.params["z_log_sigma"].clamp_min(math.log(self.sigma_floor)).exp()

    def _losses(self, x: Any, gen: Any) -> tuple[Any, Any, Any]:
        """Per-descriptor reconstruction ``-log p(x|z)`` (without the constant) and KL, and the sampled ``z``."""
        import torch

        x_in = x
        if self.dropout > 0:
            keep = torch.rand(x.shape, generator=gen, device=x.device) >= self.dropout
            x_in = x * keep / (1 - self.dropout)
        mu = self._encoder(x_in)
        s_z = self._sigma_z()
        z = mu + s_z * torch.randn(mu.shape, generator=gen, device=x.device)
        pre = self._decoder_pre(z)
        x_hat = pre.relu() if self.decoder_relu else pre
        s_x = self._sigma_x()
        rec = (0.5 * ((x - x_hat) / s_x) ** 2 + s_x.log()).sum(1)
        kl = 0.5 * (mu**2 + s_z**2 - 1 - 2 * s_z.log()).sum(1)
        return rec, kl, z

    # -- fitting ------------------------------------------------------------------------------------------------
    def fit(
        self,
        sample: Any,
        labels: Sequence[int] | None = None,
        *,
        ids: Sequence[str] | None = None,
        max_descriptors: int = 100_000,
    ) -> FVVAEEncoder:
        """Train the VAE on ``sample``; with ``labels``, continue end to end with the classification loss.

        Args:
            sample: without labels, ``(M, D)`` descriptors (e.g. from :func:`sample_descriptors`) or a sequence of
                ``(n_i, D)`` arrays (concatenated); with labels, a sequence of the training videos' ``(n_i, D)``
                arrays: any object with ``len`` and ``[i]``, e.g. a lazy reader of a store (each end-to-end step
                reads ``sets_per_batch`` of them).
            labels: one class index per video of ``sample`` (0 .. C-1).
            ids: the training videos' ids (recorded as a count and a hash in ``fitted_on``).
            max_descriptors: with labels, the unsupervised stage and the Fisher information use a reservoir
                sample of at most this many descriptors of the videos, drawn in one pass over them.
        """
        import torch

        if labels is not None:
            if isinstance(sample, np.ndarray) and sample.ndim == 2:
                raise ValueError("sample: with labels, give one (n_i, D) array per video, not one (M, D) array")
            y = np.asarray(labels)
            if y.ndim != 1 or len(y) != len(sample):
                raise ValueError(f"labels: expected one label per video ({len(sample)}), got shape {y.shape}")
            if len(y) == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
                raise ValueError("labels: expected non-negative integer class indices")
            flat = sample_descriptors((sample[i] for i in range(len(sample))), max_descriptors, self.seed)
            x = _as_matrix(flat, np.float32)
            self.num_classes = int(y.max()) + 1
        else:
            x = _as_matrix(sample, np.float32)
            self.num_classes = None
        d = x.shape[1]
        sum_sq = sum(float(np.square(x[a : a + 8192], dtype=np.float64).sum()) for a in range(0, len(x), 8192))
        self.scale = 1.0 / max(math.sqrt(sum_sq / x.size), 1e-12)
        self.input_dim = d
        self._init_params(d, self.num_classes)
        gen = torch.Generator(device=self.device).manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.history = {"loss": [], "rec": [], "kl": [], "cls": []}

        xs = x * np.float32(self.scale)
        # start from the model that ignores z: p(x) = N(mean, diag(std^2)) per dimension
        self.params["decoder.bias"] = torch.from_numpy(xs.mean(0)).to(self.device)
        self.params["x_log_sigma"] = torch.from_numpy(np.log(np.maximum(xs.std(0), self.sigma_floor))).to(self.device)
        trainable = [v for k, v in self.params.items() if k != "fim"]
        for v in trainable:
            v.requires_grad_(True)
        sigmas = [self.params["x_log_sigma"], self.params["z_log_sigma"]]
        others = [v for k, v in self.params.items() if k not in ("fim", "x_log_sigma", "z_log_sigma")]
        # the prototxt gives the two sigma vectors 10x the base learning rate ("x_sigma", "z_sigma": lr_mult 10)
        opt = torch.optim.Adam([{"params": others}, {"params": sigmas, "lr": 10 * self.lr}], lr=self.lr)
        order = rng.permutation(len(xs))
        pos = 0
        for _ in range(self.steps):  # stage 1: the variational lower bound on descriptors
            if pos + self.batch_size > len(order):
                order, pos = rng.permutation(len(xs)), 0
            batch = torch.from_numpy(xs[order[pos : pos + self.batch_size]]).to(self.device)
            pos += self.batch_size
            rec, kl, _ = self._losses(batch, gen)
            loss = (rec.mean() + kl.mean()) / d
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self._log(loss, rec, kl, None, d)

        if labels is not None:  # stage 2: end to end with the classification loss
            y_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
            for _ in range(self.finetune_steps):
                pick = rng.choice(len(sample), size=min(self.sets_per_batch, len(sample)), replace=False)
                parts, owner = [], []
                for j, v in enumerate(pick):
                    s = np.asarray(sample[int(v)], np.float32)
                    if s.ndim != 2 or s.shape[1] != d or len(s) == 0:
                        raise ValueError(f"sample[{int(v)}]: expected (n >= 1, {d}) descriptors, got {s.shape}")
                    if len(s) > self.descriptors_per_set:
                        s = s[np.sort(rng.choice(len(s), self.descriptors_per_set, replace=False))]
                    parts.append(s)
                    owner.append(np.full(len(s), j))
                batch = torch.from_numpy(np.concatenate(parts) * np.float32(self.scale)).to(self.device)
                own = torch.from_numpy(np.concatenate(owner)).to(self.device)
                rec, kl, z = self._losses(batch, gen)
                scores = z @ self.params["classifier.weight"].T + self.params["classifier.bias"]  # (n, C)
                pooled = torch.full((len(pick), self.num_classes), -torch.inf, device=self.device)
                pooled = pooled.scatter_reduce(0, own[:, None].expand_as(scores), scores, reduce="amax")
                cls = torch.nn.functional.cross_entropy(pooled, y_t[torch.as_tensor(pick)].to(self.device))
                loss = (rec.mean() + kl.mean()) / d + self.cls_weight * cls
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._log(loss, rec, kl, cls, d)

        for v in trainable:
            v.requires_grad_(False)
        self.params["fim"] = self._fisher_information(xs)
        self._record_fit(len(x), ids, _n_sets(sample))
        return self

    def _log(self, loss: Any, rec: Any, kl: Any, cls: Any, d: int) -> None:
        self.history["loss"].append(float(loss.detach()))
        self.history["rec"].append(float(rec.detach().mean()) / d)
        self.history["kl"].append(float(kl.detach().mean()) / d)
        self.history["cls"].append(float("nan") if cls is None else float(cls.detach()))

    def _fisher_information(self, xs: np.ndarray, chunk: int = 4096) -> Any:
        """Diagonal of the empirical Fisher information ``E[g_i^2]`` ``(D, latent + 1)`` over scaled descriptors."""
        import torch

        acc = torch.zeros(self.input_dim, self.latent + 1, dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for a in range(0, len(xs), chunk):
                r, zt = self._residuals(torch.from_numpy(xs[a : a + chunk]).to(self.device))
                acc += ((r * r).T @ (zt * zt)).double()
        fim = (acc / len(xs)).float()
        return fim + 1e-8 * fim.mean().clamp_min(1e-30)  # a dimension never excited is not divided by 0

    def _residuals(self, x: Any) -> tuple[Any, Any]:
        """``r`` ``(n, D)`` and ``[z, 1]`` ``(n, latent + 1)`` of scaled descriptors: ``g_i = r_i [z_i; 1]^T``."""
        import torch

        z = self._encoder(x)
        pre = self._decoder_pre(z)
        x_hat = pre.relu() if self.decoder_relu else pre
        r = (x - x_hat) / self._sigma_x() ** 2
        if self.decoder_relu:
            r = r * (pre > 0)
        return r, torch.cat([z, torch.ones(len(z), 1, device=z.device, dtype=z.dtype)], 1)

    # -- encoding -----------------------------------------------------------------------------------------------
    def _raw_batch(self, sets: list[np.ndarray]) -> Any:
        """Mean Fisher scores ``(B, D, latent + 1)`` (torch, on the device) of validated sets."""
        import torch

        x = torch.from_numpy(np.concatenate(sets).astype(np.float32) * np.float32(self.scale)).to(self.device)
        with torch.no_grad():
            r, zt = self._residuals(x)
            out = torch.empty(len(sets), self.input_dim, self.latent + 1, device=self.device)
            start = 0
            for b, s in enumerate(sets):
                n = len(s)
                out[b] = r[start : start + n].T @ zt[start : start + n] / n
                start += n
        return out

    def scores(self, local: Any) -> np.ndarray:
        """The raw FV-VAE of one video: the mean gradient ``(D * (latent + 1),)`` float32 of ``log p(x_i|z_i)``
        with respect to ``[decoder.weight | decoder.bias]`` (row-major ``(D, latent + 1)``), before the Fisher
        information and the power/L2 normalisations."""
        return self._raw_batch([self._check_set(local, "scores")])[0].reshape(-1).cpu().numpy()

    def _encode_batch(self, sets: list[np.ndarray]) -> np.ndarray:
        g = self._raw_batch(sets) / self.params["fim"].sqrt()
        g = g.reshape(len(sets), -1)
        g = g.sign() * g.abs().sqrt()
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return g.cpu().numpy().astype(np.float32, copy=False)

    def class_scores(self, local: Any) -> np.ndarray:
        """The end-to-end classifier's scores ``(C,)`` for one video (max over its descriptors of the classifier
        on ``mu_z``); only after ``fit`` with labels."""
        import torch

        if "classifier.weight" not in self.params:
            raise ValueError("class_scores: this FV-VAE was fitted without labels (no classifier)")
        x = torch.from_numpy(self._check_set(local, "class_scores").astype(np.float32) * np.float32(self.scale))
        with torch.no_grad():
            z = self._encoder(x.to(self.device))
            s = z @ self.params["classifier.weight"].T + self.params["classifier.bias"]
        return s.max(0).values.cpu().numpy()

    # -- persistence --------------------------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.params.items()}
        arrays["scale"] = np.array([self.scale], np.float64)
        return arrays

    def _set_arrays(self, arrays: dict[str, np.ndarray], where: str) -> None:
        import torch

        d = self.input_dim
        sizes = [d, *self.hidden, self.latent]
        shapes: dict[str, tuple[int, ...] | None] = {
            "scale": (1,),
            "z_log_sigma": (self.latent,),
            "decoder.weight": (d, self.latent),
            "decoder.bias": (d,),
            "x_log_sigma": (d,),
            "fim": (d, self.latent + 1),
        }
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            shapes[f"encoder.{i}.weight"] = (b, a)
            shapes[f"encoder.{i}.bias"] = (b,)
        if "classifier.weight" in arrays:
            c = arrays["classifier.weight"].shape[0]
            shapes.update({"classifier.weight": (c, self.latent), "classifier.bias": (c,)})
            self.num_classes = c
        arrays = _take(arrays, shapes, where)
        for k, v in arrays.items():
            if not np.isfinite(v).all():
                raise ValueError(f"{where}: array {k!r} holds NaN or infinite values")
        if (arrays["fim"] <= 0).any() or arrays["scale"][0] <= 0:
            raise ValueError(f"{where}: the Fisher information and the scale must be positive")
        self.scale = float(arrays["scale"][0])
        self.params = {
            k: torch.from_numpy(np.array(v, np.float32)).to(self.device) for k, v in arrays.items() if k != "scale"
        }


ENCODERS: dict[str, type[LocalEncoder]] = {
    FisherVectorEncoder.kind: FisherVectorEncoder,
    VLADEncoder.kind: VLADEncoder,
    FVVAEEncoder.kind: FVVAEEncoder,
}
"""Encoder classes by the name a command line uses: ``"fv"``, ``"vlad"``, ``"fv-vae"``."""
