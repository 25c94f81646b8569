"""Glue between feature files, list files and the SVM protocols: which videos, which labels, which splits.

Labels of a video, in order of precedence: the label column of a split list, a ``--labels`` file, the label
stored in the feature file by ``p3d extract`` (known when the input was a labelled dataset), and finally the
video's parent directory when it names a class of the class index (UCF101's ``testlist0X.txt`` has no label
column but its paths are ``<class>/<video>.avi``).

Multi-label videos (ActivityNet untrimmed, Sports-1M): when the feature file stores all labels of each video
(``FeatureSet.multi_labels``), the protocol carries them for the metrics; a video whose label is overridden by a
list or label file has that single label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p3d.evaluation.lists import (
    ClassIndex,
    read_class_index,
    read_label_file,
    read_split_list,
    resolve_ids,
)
from p3d.evaluation.svm import Split, kfold_splits, leave_one_group_out_splits
from p3d.representation.store import FeatureSet


@dataclass
class Protocol:
    """Labels ``(N,)`` (-1 unknown) for the rows of a feature set, the splits, and how to report them.

    ``multi_labels``: all true classes of each row (None for single-label data); ``labels`` is the first.
    """

    labels: np.ndarray
    splits: list[Split]
    pool: bool
    class_names: list[str] | None
    description: str
    multi_labels: list[tuple[int, ...]] | None = None


def _class_index(fs: FeatureSet, classes: str | Path | None) -> ClassIndex | None:
    if classes is not None:
        return read_class_index(classes)
    if fs.class_names:
        return ClassIndex(tuple(fs.class_names), 0)
    return None


class _Labeler:
    """Turns label tokens (ints or class names) into class numbers, growing a vocabulary if no index is given."""

    def __init__(self, index: ClassIndex | None) -> None:
        self.index = index
        self.vocab: dict[str, int] = {}

    def __call__(self, token: str, where: str) -> int:
        if self.index is not None:
            return self.index.index(token, where)
        try:
            return int(token)
        except ValueError:
            return self.vocab.setdefault(token, len(self.vocab))

    @property
    def names(self) -> list[str] | None:
        if self.index is not None:
            return list(self.index.names)
        if self.vocab:
            return [n for n, _ in sorted(self.vocab.items(), key=lambda kv: kv[1])]
        return None


class _Labels:
    """The label of every row of a feature set as the protocol files give them: stored labels, then a label file,
    then split lists, then (with a class index) the video's folder name."""

    def __init__(self, fs: FeatureSet, classes: str | Path | None, labels: str | Path | None) -> None:
        self.fs = fs
        self.index = _class_index(fs, classes)
        self.lab = _Labeler(self.index)
        self.y = fs.labels.copy()
        if labels is not None:
            table = read_label_file(labels)
            rows = resolve_ids(fs.ids, list(table), f"the label file {labels}", fs.source)
            for r, (vid, tok) in zip(rows, table.items(), strict=True):
                self.y[r] = self.lab(tok, f"{labels}: {vid}")

    def from_list(self, path: str | Path) -> np.ndarray:
        """Rows of a split list, labelled by its tokens (or folders); every row must end up labelled."""
        items = read_split_list(path)
        rows = resolve_ids(self.fs.ids, [v for v, _ in items], f"the split list {path}", self.fs.source)
        for r, (vid, tok) in zip(rows, items, strict=True):
            if tok is not None:
                self.y[r] = self.lab(tok, f"{path}: {vid}")
        self.from_folders(rows)
        missing = [self.fs.ids[r] for r in rows if self.y[r] < 0]
        if missing:
            raise ValueError(
                f"{len(missing)} video(s) of the split list {path} have no label (give a label column, --labels or "
                f"--classes matching their folder names): {', '.join(map(repr, missing[:5]))}"
            )
        return rows

    def from_folders(self, rows: np.ndarray) -> None:
        """Unlabelled rows whose id's folder is a class name (UCF101 ``Class/v_Class_g01_c01``)."""
        if self.index is None:
            return
        for r in rows:
            if self.y[r] < 0 and "/" in self.fs.ids[r]:
                parent = self.fs.ids[r].rsplit("/", 2)[-2]
                if parent in self.index.names:
                    self.y[r] = self.index.names.index(parent)

    def protocol(self, splits: list[Split], pool: bool, description: str) -> Protocol:
        multi = None
        if self.fs.multi_labels is not None:  # a relabelled row keeps only its new label
            y, first = self.y, self.fs.labels
            multi = [
                labs if y[r] == first[r] else ((int(y[r]),) if y[r] >= 0 else ())
                for r, labs in enumerate(self.fs.multi_labels)
            ]
        return Protocol(self.y, splits, pool, self.lab.names, description, multi)


def _split_lists(lab: _Labels, splits: Sequence[tuple[str | Path, str | Path]]) -> Protocol:
    out = []
    for i, (train_file, test_file) in enumerate(splits):
        train, test = lab.from_list(train_file), lab.from_list(test_file)
        overlap = np.intersect1d(train, test)
        if len(overlap):
            raise ValueError(
                f"{train_file} and {test_file} share {len(overlap)} video(s), e.g. {lab.fs.ids[overlap[0]]!r}"
            )
        out.append(Split(f"split{i + 1}", train, test))
    return lab.protocol(out, False, f"{len(splits)} train/test split(s), mean over splits")


def _group_splits(lab: _Labels, known: np.ndarray, groups: str | Path) -> list[Split]:
    fs = lab.fs
    table = read_label_file(groups)  # same two-column format: <video> <group>
    g = np.full(len(fs.ids), "", dtype=object)
    g[resolve_ids(fs.ids, list(table), f"the group file {groups}", fs.source)] = list(table.values())
    no_group = [fs.ids[r] for r in known if g[r] == ""]
    if no_group:
        raise ValueError(f"{groups}: no group for {len(no_group)} video(s), e.g. {no_group[0]!r}")
    return leave_one_group_out_splits(g[known])


def build_protocol(
    fs: FeatureSet,
    *,
    splits: Sequence[tuple[str | Path, str | Path]] = (),
    kfold: int | None = None,
    loo: bool = False,
    groups: str | Path | None = None,
    labels: str | Path | None = None,
    classes: str | Path | None = None,
    seed: int = 0,
) -> Protocol:
    """Labels and splits for one of: train/test split lists (mean over splits), k-fold, leave-one-video-out,
    leave-one-group-out (``groups``: ``<video> <group>`` lines).  Exactly one protocol must be chosen."""
    chosen = sum([bool(splits), kfold is not None, loo, groups is not None])
    if chosen != 1:
        raise ValueError("choose exactly one protocol: --split TRAIN TEST (repeatable), --kfold K, --loo or --groups")
    lab = _Labels(fs, classes, labels)
    if splits:
        return _split_lists(lab, splits)
    rows = np.arange(len(fs.ids))
    lab.from_folders(rows)
    known = rows[lab.y >= 0]
    if len(known) < len(rows):
        import warnings

        warnings.warn(f"{len(rows) - len(known)} video(s) without a label are left out", stacklevel=2)
    if len(known) < 2:
        raise ValueError(f"{fs.source}: fewer than 2 labelled videos; give --labels or a labelled dataset")
    if kfold is not None:
        sp = kfold_splits(lab.y[known], kfold, seed=seed)
        desc = f"{kfold}-fold cross-validation, pooled held-out predictions"
    elif loo:
        sp = leave_one_group_out_splits(range(len(known)))
        desc = "leave-one-video-out, pooled held-out predictions"
    else:
        sp = _group_splits(lab, known, groups)
        desc = f"leave-one-group-out ({len(sp)} groups), pooled held-out predictions"
    return lab.protocol([Split(s.name, known[s.train], known[s.test]) for s in sp], True, desc)
