"""Plain-text lists used by the evaluation protocols: split lists, class indices, label files, pair lists.

Formats (one item per line; blank lines and lines starting with ``#`` are skipped; fields split on whitespace):

* split list (UCF101 ``trainlist01.txt`` / ``testlist01.txt`` style): ``<video> [<label>]``; ``<video>`` is a
  path or id, normalised by :func:`normalize_id`; ``<label>`` an integer (numbered as in the class index
  file, e.g. 1-based for UCF101's ``classInd.txt``) or a class name.
* class index (``classInd.txt``): ``<index> <name>`` lines, or just ``<name>`` per line (0-based order).
* label file: ``<video> <label>``.
* pair list (ASLAN): ``<video1> <video2> <same> [<fold>]`` with ``<same>`` 1/0, true/false, same/different.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from p3d.data.video import normalize_id
from p3d.errors import missing_ids_error
from p3d.fileio import read_text


def _lines(path: str | Path, what: str = "list file") -> list[tuple[int, list[str]]]:
    out = []
    for n, line in enumerate(read_text(path, what).splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            out.append((n, line.split()))
    return out


@dataclass(frozen=True)
class ClassIndex:
    """Class names and how integer labels in list files map to them (``base``: the first index used)."""

    names: tuple[str, ...]
    base: int = 0

    def index(self, token: str, where: str) -> int:
        """0-based class index of a label token (an integer numbered from ``base``, or a class name)."""
        try:
            i = int(token) - self.base
        except ValueError:
            try:
                return self.names.index(token)
            except ValueError:
                raise ValueError(f"{where}: unknown class name {token!r}") from None
        if not 0 <= i < len(self.names):
            raise ValueError(
                f"{where}: label {token} outside the class index ({self.base}..{self.base + len(self.names) - 1})"
            )
        return i


def read_class_index(path: str | Path) -> ClassIndex:
    """Read ``classInd.txt`` (``<index> <name>``) or a plain list of names (0-based)."""
    rows = _lines(path, "class index")
    if not rows:
        raise ValueError(f"{path}: empty class index")
    if all(len(r) == 2 and r[0].lstrip("-").isdigit() for _, r in rows):
        idx = [int(r[0]) for _, r in rows]
        base = min(idx)
        if sorted(idx) != list(range(base, base + len(idx))):
            raise ValueError(f"{path}: class indices must be consecutive, got {sorted(idx)[:10]}...")
        names = [""] * len(idx)
        for (_, r), i in zip(rows, idx, strict=True):
            names[i - base] = r[1]
        return ClassIndex(tuple(names), base)
    bad = [n for n, r in rows if len(r) != 1]
    if bad:
        raise ValueError(f"{path}: line {bad[0]}: expected '<index> <name>' or '<name>'")
    return ClassIndex(tuple(r[0] for _, r in rows), 0)


def read_split_list(path: str | Path) -> list[tuple[str, str | None]]:
    """``[(video id, label token or None), ...]`` of a split list (see the module docstring)."""
    out = []
    for n, r in _lines(path, "split list"):
        if len(r) > 2:
            raise ValueError(f"{path}: line {n}: expected '<video> [<label>]', got {len(r)} fields")
        out.append((normalize_id(r[0]), r[1] if len(r) == 2 else None))
    if not out:
        raise ValueError(f"{path}: empty split list")
    return out


def read_label_file(path: str | Path) -> dict[str, str]:
    """``{video id: label token}`` from ``<video> <label>`` lines."""
    out = {}
    for n, r in _lines(path, "label file"):
        if len(r) != 2:
            raise ValueError(f"{path}: line {n}: expected '<video> <label>', got {len(r)} fields")
        out[normalize_id(r[0])] = r[1]
    return out


_TRUE = {"1", "true", "same", "yes", "+1"}
_FALSE = {"0", "false", "different", "not_same", "no", "-1"}


@dataclass(frozen=True)
class PairList:
    """ASLAN-style pairs: ``first[i]``, ``second[i]`` video ids, ``same[i]`` bool, ``fold[i]`` (-1 if none)."""

    first: list[str]
    second: list[str]
    same: np.ndarray
    fold: np.ndarray


def read_pair_list(path: str | Path) -> PairList:
    """Read ``<video1> <video2> <same> [<fold>]`` lines; the fold column must be all there or all absent."""
    a, b, same, fold = [], [], [], []
    for n, r in _lines(path, "pair list"):
        if len(r) not in (3, 4):
            raise ValueError(f"{path}: line {n}: expected '<video1> <video2> <same> [<fold>]'")
        s = r[2].lower()
        if s not in _TRUE | _FALSE:
            raise ValueError(f"{path}: line {n}: 'same' must be 1/0 (or true/false, same/different), got {r[2]!r}")
        a.append(normalize_id(r[0]))
        b.append(normalize_id(r[1]))
        same.append(s in _TRUE)
        if len(r) == 4:
            try:
                fold.append(int(r[3]))
            except ValueError:
                raise ValueError(f"{path}: line {n}: fold must be an integer, got {r[3]!r}") from None
        else:
            fold.append(None)
    if not a:
        raise ValueError(f"{path}: empty pair list")
    if any(f is None for f in fold) and any(f is not None for f in fold):
        raise ValueError(f"{path}: the fold column is present on some lines only")
    folds = np.array([-1 if f is None else f for f in fold], dtype=np.int64)
    return PairList(a, b, np.array(same, dtype=bool), folds)


def resolve_ids(known: Sequence[str], ids: Sequence[str], what: str, source: str) -> np.ndarray:
    """Rows of ``ids`` in ``known``: exact match, else a unique match on the file name alone.

    The fallback lets a list written with bare names (``v_X_g01_c01``) match features extracted from a folder
    tree (``X/v_X_g01_c01``).  Missing ids raise an error naming ``what`` (the list file) and ``source``.
    """
    row = {k: i for i, k in enumerate(known)}
    by_name: dict[str, int] = {}
    dup: set[str] = set()
    for i, k in enumerate(known):
        base = k.rsplit("/", 1)[-1]
        if base in by_name:
            dup.add(base)
        by_name[base] = i
    out = np.empty(len(ids), dtype=np.int64)
    missing = []
    for j, vid in enumerate(ids):
        if vid in row:
            out[j] = row[vid]
            continue
        base = vid.rsplit("/", 1)[-1]
        if base in by_name and base not in dup:
            out[j] = by_name[base]
        else:
            missing.append(vid)
    if missing:
        raise missing_ids_error(missing, what, source, len(known), total=len(ids))
    return out
