"""Loaders for a user's own files: numeric CSV (stdlib ``csv``) and NumPy ``.npz`` archives.

Classification labels, and groups, may be numbers or strings; their sorted distinct values are
mapped to ``0..C-1`` (numerically when every value is a number, so ``"10"`` sorts after ``"9"``).
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedloom.data.dataset import Dataset

PathLike = str | os.PathLike[str]


def encode_labels(values: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Map values to ``0..C-1`` by their sorted distinct values; returns (codes, distinct)."""
    if values.dtype.kind in "US":
        with contextlib.suppress(ValueError):
            values = values.astype(np.float64)
    distinct, codes = np.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), distinct


def _existing(path: PathLike, loader: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{loader}: path={str(path)!r} is not an existing file")
    return file


def load_csv(
    path: PathLike,
    *,
    target: str,
    group: str | None = None,
    features: Sequence[str] | None = None,
    classification: bool = True,
) -> Dataset:
    """Read a CSV with a header row; ``features`` default to every column but target and group.

    Feature cells must be numbers; a bad cell raises ValueError naming its row and column.
    For regression (``classification=False``) the target must be numeric too. Blank lines are
    skipped. ``group`` names a column of natural groups (any values) for
    :func:`fedloom.data.natural`.
    """
    file = _existing(path, "load_csv")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [name.strip() for name in next(reader, [])]
        rows = [row for row in reader if row]
    if not header:
        raise ValueError(f"load_csv: {str(path)!r} is empty; expected a header row of column names")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise ValueError(f"load_csv: {str(path)!r} repeats column names {repeated}")
    if not rows:
        raise ValueError(f"load_csv: {str(path)!r} has a header but no data rows")
    for number, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise ValueError(
                f"load_csv: {str(path)!r} row {number} has {len(row)} fields but the header "
                f"has {len(header)}"
            )

    def column(name: str, argument: str) -> list[str]:
        if name not in header:
            raise ValueError(
                f"load_csv: {argument}={name!r} is not a column of {str(path)!r}; "
                f"available columns: {header}"
            )
        position = header.index(name)
        return [row[position].strip() for row in rows]

    labels = column(target, "target")
    groups = None if group is None else encode_labels(np.array(column(group, "group")))[0]
    if features is None:
        features = [name for name in header if name not in (target, group)]
    elif isinstance(features, str):
        raise ValueError(
            f"features must be a sequence of column names, got the string {features!r}"
        )
    if not features:
        raise ValueError(
            f"load_csv: no feature columns left in {str(path)!r} besides target={target!r} and "
            f"group={group!r}; available columns: {header}"
        )
    cells = [column(name, "features") for name in features]
    x = np.stack([_numbers(c, name, path) for c, name in zip(cells, features, strict=True)], 1)
    name = file.stem
    if classification:
        y, distinct = encode_labels(np.array(labels))
        return Dataset(name, x, y, len(distinct), groups)
    return Dataset(name, x, _numbers(labels, target, path), None, groups)


def _numbers(cells: list[str], column: str, path: PathLike) -> npt.NDArray[np.float32]:
    try:
        return np.array(cells, dtype=np.float64).astype(np.float32)
    except ValueError:
        for number, cell in enumerate(cells, start=1):
            try:
                float(cell)
            except ValueError:
                raise ValueError(
                    f"load_csv: {str(path)!r} row {number}, column {column!r}: {cell!r} is not a "
                    "number; feature columns (and a regression target) must be numeric, so "
                    "choose columns with features=[...]"
                ) from None
        raise


def load_npz(
    path: PathLike,
    *,
    x: str = "x",
    y: str = "y",
    groups: str | None = None,
    classification: bool = True,
) -> Dataset:
    """Read arrays named ``x``, ``y`` (and ``groups``) from an ``.npz`` archive.

    The archive is opened with ``allow_pickle=False``: arrays of Python objects would need
    unpickling, which can run arbitrary code, so they are refused with a ValueError.
    """
    file = _existing(path, "load_npz")
    try:
        archive = np.load(file, allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"load_npz: cannot read {str(path)!r} without unpickling: {error}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"load_npz: {str(path)!r} holds a single array, not an .npz archive of named arrays "
            "(write one with np.savez(path, x=..., y=...))"
        )
    with archive:

        def read(key: str, argument: str) -> npt.NDArray[Any]:
            if key not in archive.files:
                raise ValueError(
                    f"load_npz: {argument}={key!r} is not an array in {str(path)!r}; "
                    f"available arrays: {sorted(archive.files)}"
                )
            try:
                return np.asarray(archive[key])
            except ValueError:
                raise ValueError(
                    f"load_npz: array {key!r} in {str(path)!r} holds Python objects (dtype=object),"
                    " which load_npz refuses to unpickle (allow_pickle=False: unpickling can run "
                    "arbitrary code); save it with a numeric or string dtype"
                ) from None

        features, targets = read(x, "x"), read(y, "y")
        group_values = None if groups is None else read(groups, "groups")
    if features.dtype.kind not in "biuf":
        raise ValueError(f"load_npz: array x={x!r} must be numeric, got dtype {features.dtype}")
    codes = None if group_values is None else encode_labels(group_values.reshape(-1))[0]
    name = file.stem
    if classification:
        labels, distinct = encode_labels(targets.reshape(-1))
        return Dataset(name, features, labels, len(distinct), codes)
    if targets.dtype.kind not in "biuf":
        raise ValueError(
            f"load_npz: regression target y={y!r} must be numeric, got {targets.dtype}"
        )
    return Dataset(name, features, targets, None, codes)
