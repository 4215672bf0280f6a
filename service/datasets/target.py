"""A dataset's target: numbers (one or more columns, for regression, or integer labels for
classification) or text labels (classification only), checked once when it is uploaded.

Labels are stored as indices into their sorted distinct values, the order a job's classes take,
so a job that trains from the dataset reads its classes without sorting anything again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from service.datasets.columns import Locate, Moments, check_numbers, label_column
from service.datasets.limits import UploadLimits
from service.datasets.safetensors_file import TensorSource, array_source
from service.errors import InvalidInput

# Integer labels beyond this are not exact in float64, the type numeric columns are stored in.
MAX_EXACT_INTEGER = 2**53

if TYPE_CHECKING:  # pyarrow's classes take no type arguments at run time
    # A column of text cells, in one chunk or several.
    Texts = pa.ChunkedArray[pa.StringScalar]


@dataclass(frozen=True)
class Target:
    name: str
    column_names: list[str]  # one per target column: the name itself when there is one column
    values: np.ndarray  # numbers: float64 [rows, columns]; labels: int64 indices into `labels`
    labels: list[str] | None  # text labels, sorted; None for numbers
    # The classes a classification job would have (labels, or the integers of a numeric
    # column with few distinct values); None when the target cannot be classified.
    classes: list[Any] | None
    summaries: list[dict[str, Any]]

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    def tensor(self) -> TensorSource:
        return array_source("y", self.values)


def numeric_target(
    name: str, column_names: list[str], values: np.ndarray, limits: UploadLimits, locate: Locate
) -> Target:
    """A target of numbers, `values` as float64 [rows, columns]."""
    check_numbers(values, column_names, 0, locate)
    moments = Moments(len(column_names))
    moments.add(values)
    classes = integer_classes(values[:, 0], limits.max_classes) if len(column_names) == 1 else None
    summaries = moments.summaries(column_names, "target")
    return Target(name, column_names, values, None, classes, summaries)


def integer_classes(values: np.ndarray, max_classes: int) -> list[int] | None:
    """The distinct values when all are integers and at most `max_classes` differ."""
    if len(values) == 0 or np.abs(values).max() > MAX_EXACT_INTEGER:
        return None
    if not np.array_equal(values, np.floor(values)):
        return None
    distinct = np.unique(values)
    if len(distinct) > max_classes:
        return None
    return [int(v) for v in distinct]


def label_target(name: str, values: Texts, limits: UploadLimits, locate: Locate) -> Target:
    """A target of text labels (no nulls), one per row."""
    empty = pc.equal(pc.utf8_length(values), pa.scalar(0, pa.int32()))
    if pc.any(empty).as_py():
        raise InvalidInput(f"{locate(pc.index(empty, True).as_py(), name)}: the label is empty")
    distinct = pc.unique(values)
    if len(distinct) > limits.max_classes:
        raise InvalidInput(
            f"the target column {name!r} holds {len(distinct)} distinct labels, above the limit "
            f"of {limits.max_classes} classes (SERVICE_MAX_CLASSES)"
            + _not_a_number_note(values, name, locate)
        )
    labels: list[str] = sorted(str(label) for label in distinct.to_pylist())
    _check_label_lengths(name, labels, limits)
    indices = pc.index_in(values, value_set=pa.array(labels, pa.string()))
    codes = np.asarray(indices.to_numpy(), dtype=np.int64)
    return Target(name, [name], codes, labels, labels, [label_column(name)])


def texts(values: list[str]) -> Texts:
    return pa.chunked_array([pa.array(values, pa.string())], pa.string())


def text_target(name: str, values: Texts, limits: UploadLimits, locate: Locate) -> Target:
    """A CSV's target column, read as text: numbers when every cell is one, labels otherwise.
    Cells that mark a missing value (empty, NA, NaN, null) are refused, as in features."""
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise InvalidInput(f"{locate(row, name)}: {MISSING}")
    trimmed = pc.utf8_trim_whitespace(values)
    try:
        numbers = pc.cast(trimmed, pa.float64())
    except pa.ArrowInvalid:
        return label_target(name, trimmed, limits, locate)
    column = np.asarray(numbers.to_numpy(), dtype=np.float64).reshape(-1, 1)
    return numeric_target(name, [name], column, limits, locate)


MISSING = (
    "the cell is empty or marks a missing value (NA, NaN, null); missing values are not "
    "accepted: fill them in or drop the row"
)


def _check_label_lengths(name: str, labels: list[str], limits: UploadLimits) -> None:
    longest = max(labels, key=len)
    if len(longest) > limits.max_label_chars:
        raise InvalidInput(
            f"the target column {name!r} holds a label of {len(longest)} characters, above the "
            f"limit of {limits.max_label_chars} (SERVICE_MAX_LABEL_CHARS)"
        )
    total = sum(len(label) for label in labels)
    if total > limits.max_label_total_chars:
        raise InvalidInput(
            f"the target column's distinct labels take {total} characters together, above the "
            f"limit of {limits.max_label_total_chars} (SERVICE_MAX_LABEL_TOTAL_CHARS)"
        )


def _not_a_number_note(values: Texts, name: str, locate: Locate) -> str:
    """For a column of numbers with a stray word in it: where the first word is."""
    offset = 0
    for chunk in values.chunks:
        if not _casts(chunk):
            row = offset + _first_failure(chunk)
            cell = chunk[row - offset].as_py()
            return f"; it is not numeric: {locate(row, name)} holds {cell!r}"
        offset += len(chunk)
    return ""


def _casts(values: pa.Array[pa.StringScalar]) -> bool:
    try:
        pc.cast(values, pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def _first_failure(values: pa.Array[pa.StringScalar]) -> int:
    """The first cell that is not a number, by bisection on prefixes (a few dozen casts)."""
    good, bad = 0, len(values)  # values[:good] casts; values[:bad] does not
    while bad - good > 1:
        middle = (good + bad) // 2
        if _casts(values.slice(0, middle)):
            good = middle
        else:
            bad = middle
    return bad - 1
