"""CSV files read on the client side: training data for a service without datasets, and the
inputs of a prediction."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Table:
    header: list[str] | None
    rows: list[list[str]]
    path: Path


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_table(path: str | PathLike[str]) -> Table:
    """The file's rows; the first is a header when any of its cells is not a number."""
    source = Path(path)
    with source.open(newline="", encoding="utf-8-sig") as file:
        rows = [row for row in csv.reader(file) if row]
    if not rows:
        raise ValueError(f"{source} is empty")
    header = None
    if any(_number(cell) is None for cell in rows[0]):
        header = [cell.strip() for cell in rows[0]]
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{source} has a header but no rows")
    width = len(header) if header is not None else len(rows[0])
    for line, row in enumerate(rows, start=2 if header is not None else 1):
        if len(row) != width:
            raise ValueError(f"{source}, line {line}: {len(row)} values where {width} expected")
    return Table(header=header, rows=rows, path=source)


def _numbers(table: Table, columns: Sequence[int]) -> np.ndarray:
    first_line = 2 if table.header is not None else 1
    values = np.empty((len(table.rows), len(columns)), dtype=np.float64)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(columns):
            value = _number(row[column])
            if value is None:
                name = table.header[column] if table.header is not None else f"#{column + 1}"
                raise ValueError(
                    f"{table.path}, line {first_line + i}, column {name}: {row[column]!r} is "
                    "not a finite number"
                )
            values[i, j] = value
    return values


def training_data(
    path: str | PathLike[str], target: str, *, classification: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, targets and feature names from a CSV file with a header row."""
    table = read_table(path)
    if table.header is None:
        raise ValueError(f"{table.path} needs a header row naming its columns")
    if target not in table.header:
        raise ValueError(f"{table.path} has no column {target!r}; it has {table.header}")
    target_column = table.header.index(target)
    features = [i for i in range(len(table.header)) if i != target_column]
    if not features:
        raise ValueError(f"{table.path} has no feature columns besides {target!r}")
    x = _numbers(table, features)
    if not classification:
        y = _numbers(table, [target_column]).ravel()
    else:
        labels = [row[target_column].strip() for row in table.rows]
        # Labels that are all whole numbers train as ints, as they would from a JSON body.
        numeric = all(_is_int(v) for v in labels)
        y = np.asarray([int(v) for v in labels]) if numeric else np.asarray(labels)
    return x, y, [table.header[i] for i in features]


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def input_rows(path: str | PathLike[str], feature_names: Sequence[str] | None) -> np.ndarray:
    """Rows of inputs. With a header and a model that knows its feature names, columns are
    matched by name (so extra columns, such as the target, are ignored); otherwise taken in
    order."""
    table = read_table(path)
    if table.header is not None and feature_names is not None:
        missing = [name for name in feature_names if name not in table.header]
        if missing:
            raise ValueError(f"{table.path} lacks the model's feature columns {missing}")
        return _numbers(table, [table.header.index(name) for name in feature_names])
    return _numbers(table, range(len(table.rows[0])))
