"""Encode a store's local descriptors into a new feature store: the paper's res5c encodings (Sec. 5).

:func:`encode_store` fits an encoder of :mod:`p3d.representation.encoders` (Fisher vector, VLAD or FV-VAE) on the
**training videos only**, then encodes every video of a store written by ``p3d extract --local`` into a normal
feature store -- one ``video.<encoder>`` layer (``fv``, ``vlad`` or ``fv-vae``), the same ids, labels and
provenance -- that ``p3d svm``, ``similarity``, ``embed`` and ``pca-study`` read unchanged::

    features/p3d  (extract --local res5c)  --encode_store-->  features/p3d-fv/
                                                                meta.json          + meta["encoding"]
                                                                encoder.safetensors  the fitted encoder
                                                                part-r0000-*.safetensors

Fitting never sees another video than ``fit_ids``: FV and VLAD are fitted on a reservoir sample
(:func:`~p3d.representation.encoders.sample_descriptors`) drawn while streaming those videos only; FV-VAE reads
only them too (its end-to-end stage, with their labels, picks ``sets_per_batch`` of them per step).  The fitted
encoder records what it saw (``fitted_on``: videos, descriptors, SHA-256 of the sorted ids), kept in
``meta["encoding"]`` with the encoder file's SHA-256.

Resumable: the encoder is saved (atomically) before any video is encoded, and a re-run into the same output loads
it instead of fitting again -- refusing when the requested encoder, its settings or its training videos differ --
and skips the videos already encoded.  Streaming: videos are read one at a time and encoded in blocks of about
``batch_descriptors`` descriptors, so memory is one block plus the writer's chunk (bounded in bytes), whatever the
number of videos.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from p3d.fileio import sha256_file
from p3d.representation.encoders import (
    FVVAEEncoder,
    LocalEncoder,
    ids_digest,
    load_encoder,
    sample_descriptors,
)
from p3d.representation.local import PCA_NAME, LocalSet
from p3d.representation.store import FeatureWriter, read_meta

__all__ = ["ENCODER_NAME", "EncodeStats", "encode_store", "fit_encoder"]

ENCODER_NAME = "encoder.safetensors"
_CHUNK_BYTES = 64 * 2**20  # encoded rows held before a part is written


@dataclass
class EncodeStats:
    """What :func:`encode_store` did: videos written / skipped (already encoded) / bad (unreadable in the source),
    whether it fitted the encoder (``False``: loaded), and the seconds of fitting and encoding."""

    written: int = 0
    skipped: int = 0
    bad: int = 0
    fitted: bool = False
    fit_seconds: float = 0.0
    encode_seconds: float = 0.0
    encoder: LocalEncoder | None = None

    @property
    def videos_per_second(self) -> float:
        return self.written / self.encode_seconds if self.encode_seconds > 0 else 0.0


def _public_config(enc: LocalEncoder) -> dict[str, Any]:
    """Hyper-parameters that define the encoding (FV-VAE's ``device`` is where it runs, not what it computes)."""
    return {k: v for k, v in enc.config().items() if k != "device"}


def fit_encoder(
    encoder: LocalEncoder,
    local: LocalSet,
    fit_ids: Sequence[str],
    *,
    labels: Mapping[str, int] | None = None,
    max_descriptors: int = 50_000,
    seed: int = 0,
) -> LocalEncoder:
    """Fit ``encoder`` on the local descriptors of the videos ``fit_ids`` of ``local`` only.

    FV and VLAD (and FV-VAE without labels or end-to-end steps): on a reservoir sample of at most
    ``max_descriptors`` descriptors of those videos.  FV-VAE with ``labels`` (video id -> class) and
    ``finetune_steps > 0``: its two stages on those videos (:meth:`FVVAEEncoder.fit`).  Videos are read in store
    order, so the fit is the same for the same store and ids.
    """
    if not fit_ids:
        raise ValueError("fit_encoder: no training videos to fit the encoder on")
    order = np.sort(local.rows(list(fit_ids), "the training videos"))
    train = local.subset([local.ids[r] for r in order])
    if isinstance(encoder, FVVAEEncoder) and labels is not None and encoder.finetune_steps > 0:
        y = np.array([labels.get(v, -1) for v in train.ids], dtype=np.int64)
        if (y < 0).any():
            missing = [v for v, c in zip(train.ids, y, strict=True) if c < 0]
            raise ValueError(
                f"FV-VAE's end-to-end stage needs the class of every training video; {len(missing)} have none, e.g. "
                f"{missing[0]!r} (extract a labelled dataset, or give --finetune-steps 0)"
            )
        return encoder.fit(train, y, ids=train.ids, max_descriptors=max_descriptors)
    sample = sample_descriptors(iter(train), max_descriptors, seed)
    return encoder.fit(sample, ids=train.ids)


def encode_store(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    encoder: LocalEncoder,
    *,
    fit_ids: Sequence[str] | None = None,
    fit_scope: str = "",
    labels: Mapping[str, int] | None = None,
    layer: str | None = None,
    max_descriptors: int = 50_000,
    seed: int = 0,
    batch_descriptors: int = 4096,
    progress: bool = False,
) -> EncodeStats:
    """Encode every video of the store ``source`` (written with local descriptors) into the feature store ``out``.

    Args:
        encoder: a fitted encoder (e.g. :func:`~p3d.representation.encoders.load_encoder`), used as it is; or an
            unfitted one, fitted here on ``fit_ids`` (:func:`fit_encoder`) unless ``out`` already holds the encoder
            of an earlier run with the same settings and training videos, which is reused.
        fit_ids: the training videos (ids of ``source``); required to fit.
        fit_scope: how the training videos were chosen (e.g. the split list), recorded in ``meta["fit_scope"]``.
        labels: video id -> class for FV-VAE's end-to-end stage (default: the labels stored in ``source``).
        layer: the local layer (default: the store's).
        max_descriptors: size of the descriptor sample the encoder is fitted on.
        batch_descriptors: descriptors encoded together (bounds memory).
    Returns:
        :class:`EncodeStats` (``stats.encoder``: the encoder used).
    Raises:
        ValueError: ``source`` holds no local descriptors; unknown training ids; an unfitted encoder without
            ``fit_ids``; ``out`` holds another encoder or other videos' encodings.
    """
    out = Path(out)
    local = LocalSet(source, layer)
    stats = EncodeStats()
    enc_path = out / ENCODER_NAME
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: output must be a directory (a feature store), found a file")
    if fit_ids is not None:
        local.rows(list(fit_ids), "the training videos")  # every training id is in the store, before any work
    if enc_path.exists():
        encoder = _resume_encoder(enc_path, encoder, fit_ids)
    else:
        if not encoder.is_fitted:
            if fit_ids is None:
                raise ValueError(
                    f"{out}: to fit the {encoder.kind} encoder, give its training videos (a split list or a list "
                    f"of ids); fitting on test videos would leak them into the representation"
                )
            if labels is None:
                labels = {v: int(c) for v, c in zip(local.ids, local.labels, strict=True) if c >= 0}
            t0 = time.perf_counter()
            fit_encoder(encoder, local, fit_ids, labels=labels, max_descriptors=max_descriptors, seed=seed)
            stats.fitted, stats.fit_seconds = True, time.perf_counter() - t0
    if encoder.input_dim != local.dim:
        raise ValueError(
            f"{source}: local descriptors are {local.dim}-d, the encoder was fitted on {encoder.input_dim}-d ones"
        )
    if not enc_path.exists():
        encoder.save(enc_path)
    stats.encoder = encoder
    meta = _encoded_meta(local, encoder, enc_path, fit_scope, source)

    kind = encoder.kind
    flush_every = max(1, min(256, _CHUNK_BYTES // (4 * encoder.dim)))
    t0 = time.perf_counter()
    with FeatureWriter(out, meta, flush_every=flush_every) as writer:
        for vid, reason in local.bad.items():
            if vid not in writer.done:
                writer.add_bad(vid, reason)
                stats.bad += 1
        todo = [i for i, vid in enumerate(local.ids) if vid not in writer.done]
        stats.skipped = len(local) - len(todo)
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True, desc=f"encode {kind}")
        block: list[tuple[int, np.ndarray]] = []
        count = 0

        def flush_block() -> None:
            codes = encoder.encode_many([x for _, x in block], batch_descriptors=max(count, 1))
            for (i, _), code in zip(block, codes, strict=True):
                writer.add(local.ids[i], {kind: code}, label=local.label_sets[i])
            stats.written += len(block)
            bar.update(len(block))

        with bar:
            for i in todo:
                x = local[i]
                block.append((i, x))
                count += len(x)
                if count >= batch_descriptors:
                    flush_block()
                    block, count = [], 0
            if block:
                flush_block()
    stats.encode_seconds = time.perf_counter() - t0
    return stats


def _resume_encoder(path: Path, requested: LocalEncoder, fit_ids: Sequence[str] | None) -> LocalEncoder:
    """The encoder an earlier run saved in the output, if it is the one requested (else one error naming why)."""
    saved = load_encoder(path, device=getattr(requested, "device", None))
    where = f"{path.parent} already holds a {saved.kind} encoder"
    if saved.kind != requested.kind or _public_config(saved) != _public_config(requested):
        raise ValueError(
            f"{where} with other settings ({_public_config(saved)}); requested {requested.kind} "
            f"{_public_config(requested)}: use another output directory"
        )
    if requested.is_fitted and requested.fitted_on != saved.fitted_on:
        raise ValueError(f"{where} fitted on {saved.fitted_on}, not the given one's {requested.fitted_on}")
    if fit_ids is not None and (saved.fitted_on or {}).get("ids_sha256") != ids_digest(fit_ids):
        raise ValueError(
            f"{where} fitted on other training videos ({(saved.fitted_on or {}).get('videos')} videos, ids SHA-256 "
            f"{(saved.fitted_on or {}).get('ids_sha256', '')[:12]}...): use another output directory"
        )
    return saved


def _encoded_meta(
    local: LocalSet, encoder: LocalEncoder, enc_path: Path, fit_scope: str, source: str | os.PathLike[str]
) -> dict[str, Any]:
    """The source's provenance, with one layer (the encoder's) and ``encoding``: what encoded it, fitted on what."""
    meta = {k: v for k, v in local.meta.items() if k not in ("local", "layers", "clip_level")}
    pca_info = None
    src = Path(source)
    if src.is_dir() and (src / PCA_NAME).exists():
        from p3d.representation.local import LocalPCA

        pca_info = LocalPCA.load(src / PCA_NAME).info.get("fitted_on")
    meta.update(
        layers=[encoder.kind],
        clip_level=False,
        encoding={  # compared on resume (FeatureWriter): one store never mixes two encoders
            "encoder": encoder.kind,
            "config": _public_config(encoder),
            "dim": encoder.dim,
            "file": ENCODER_NAME,
            "sha256": sha256_file(enc_path),
            "fitted_on": encoder.fitted_on,
            "local": local.meta["local"],
            "local_pca_fitted_on": pca_info,
        },
        encoded_from=str(source),
        fit_scope=fit_scope,
    )
    old = read_meta(enc_path.parent)
    if old is not None:  # descriptions of the first run (how paths were written may differ), not compared
        meta.update({k: old[k] for k in ("encoded_from", "fit_scope") if k in old})
    return meta
