"""A CSV upload, read by pyarrow's streaming reader a block at a time.

The header names the columns; `target` picks the target, and every other column is a feature,
read as float64 (a cell that is not a number is refused). Only one block of rows is held in
memory (features go to disk as they are read); the target is held whole, one column.

The target is read as float64 too unless the first block shows text: a regression target, the
large case, then never exists as text in memory. A target with text found further down is read
again, in a second pass, as text, and becomes labels (or numbers, if every cell still is one).

Errors name the line and the column. The reader runs on one thread, which makes pyarrow's own
errors carry the row ("Row #N", counting the header as line 1 and skipping blank lines), and is
plenty: parsing is not what an upload waits on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as arrow_csv

from service.datasets.assemble import BuiltDataset, assemble
from service.datasets.columns import FeatureSpill
from service.datasets.limits import MAX_NAME_CHARS, UploadLimits
from service.datasets.target import MISSING, numeric_target
from service.datasets.target import text_target as text_target_of
from service.errors import InvalidInput

if TYPE_CHECKING:
    from service.datasets.target import Texts

# Bytes parsed per block: large enough that per-block overhead vanishes, small enough that a
# block's arrays are a rounding error next to the dataset.
BLOCK_BYTES = 1024 * 1024
# Columns listed by name in an error about a missing target.
LISTED_COLUMNS = 20

ROW = re.compile(r"Row #(\d+)")
COLUMN = re.compile(r"In CSV column #(\d+)")
RAGGED = re.compile(r"Expected (\d+) columns, got (\d+)")
NOT_A_NUMBER = re.compile(r"conversion error to double: invalid value '(.*)'", re.DOTALL)


def line_of(row: int, column: str) -> str:
    """Data row `row` (0-based) is line row + 2: the header is line 1."""
    return f"line {row + 2}, column {column!r}"


class TargetIsText(Exception):
    """A cell of the target, read as a number, is not one: read it again as text."""


@dataclass(frozen=True)
class Layout:
    """The CSV's columns: their names as written and as meant, the features' and the target's."""

    raw_names: list[str]
    names: list[str]
    features: list[int]
    target: int

    def column_types(self, target_type: pa.DataType) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {raw: pa.float64() for raw in self.raw_names}
        types[self.raw_names[self.target]] = target_type
        return types


def read_csv(file: BinaryIO, target: str, limits: UploadLimits, folder: Path) -> BuiltDataset:
    """The CSV in `file` (seekable) as a dataset, its working files in `folder`."""
    raw_names, inferred = _header(file)
    # Spaces around names ("a, b, y") are the CSV's layout, not part of the names.
    names = [name.strip() for name in raw_names]
    features = _feature_indices(names, target)
    layout = Layout(raw_names, names, features, names.index(target))
    if not pa.types.is_string(inferred[layout.target]):
        try:
            return _read(file, layout, limits, folder, text_target=False)
        except TargetIsText:
            pass
    return _read(file, layout, limits, folder, text_target=True)


def _read(
    file: BinaryIO, layout: Layout, limits: UploadLimits, folder: Path, *, text_target: bool
) -> BuiltDataset:
    names, features, target = layout.names, layout.features, layout.names[layout.target]
    file.seek(0)
    target_type = pa.string() if text_target else pa.float64()
    spill = FeatureSpill([names[i] for i in features], limits, folder, line_of)
    texts: list[pa.Array[Any]] = []
    numbers: list[np.ndarray] = []
    try:
        reader = arrow_csv.open_csv(
            file,
            read_options=arrow_csv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES),
            convert_options=arrow_csv.ConvertOptions(
                column_types=layout.column_types(target_type), strings_can_be_null=True
            ),
            memory_pool=pa.system_memory_pool(),  # freed blocks go back to the system at once
        )
        for batch in reader:
            block = np.empty((batch.num_rows, len(features)))
            for j, i in enumerate(features):
                block[:, j] = _numbers(batch.column(i), spill.n_rows, names[i])
            first_row = spill.n_rows
            spill.add(block)
            column = batch.column(layout.target)
            if text_target:
                texts.append(column)
            else:
                numbers.append(_numbers(column, first_row, target))
    except pa.ArrowInvalid as exc:
        if not text_target and _column_of(exc) == layout.target:
            raise TargetIsText from None
        raise InvalidInput(describe_error(exc, names)) from None
    finally:
        spill.close()
    if spill.n_rows == 0:
        raise InvalidInput("the CSV has a header but no rows")
    if text_target:
        values: Texts = pa.chunked_array(texts, pa.string())
        return assemble(spill, text_target_of(target, values, limits, line_of), folder)
    y = np.concatenate(numbers).reshape(-1, 1)
    return assemble(spill, numeric_target(target, [target], y, limits, line_of), folder)


def _numbers(column: pa.Array[Any], first_row: int, name: str) -> np.ndarray:
    """A float64 column of a block as numpy; a missing cell is refused, naming its line."""
    if column.null_count:
        row = first_row + pc.index(pc.is_null(column), True).as_py()
        raise InvalidInput(f"{line_of(row, name)}: {MISSING}")
    return np.asarray(column.to_numpy(), dtype=np.float64)


def _header(file: BinaryIO) -> tuple[list[str], list[pa.DataType]]:
    """The header's names, and the types pyarrow infers from the first block."""
    try:
        reader = arrow_csv.open_csv(
            file, read_options=arrow_csv.ReadOptions(use_threads=False, block_size=BLOCK_BYTES)
        )
        schema = reader.schema
        names = list(schema.names)  # decoded here: a header that is not UTF-8 fails here
        reader.close()
    except pa.ArrowInvalid as exc:
        raise InvalidInput(describe_error(exc, [])) from None
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the header is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    return names, list(schema.types)


def _column_of(exc: pa.ArrowInvalid) -> int | None:
    found = COLUMN.search(str(exc))
    return int(found.group(1)) if found else None


def _feature_indices(names: list[str], target: str) -> list[int]:
    for i, name in enumerate(names):
        if not name:
            raise InvalidInput(f"column {i + 1} of the header has no name")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"column {i + 1}'s name is {len(name)} characters long, above the limit of "
                f"{MAX_NAME_CHARS}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidInput(f"the header names column {repeated[0]!r} more than once")
    if target not in names:
        listed = ", ".join(repr(name) for name in names[:LISTED_COLUMNS])
        more = f" and {len(names) - LISTED_COLUMNS} more" if len(names) > LISTED_COLUMNS else ""
        raise InvalidInput(
            f"the CSV has no column {target!r} to use as the target; its columns are {listed}{more}"
        )
    if len(names) == 1:
        raise InvalidInput(
            f"the CSV has only the target column {target!r}; a dataset needs at least one "
            "feature column besides it"
        )
    return [i for i, name in enumerate(names) if name != target]


def describe_error(exc: pa.ArrowInvalid, names: list[str]) -> str:
    """pyarrow's error as a sentence naming the line and column."""
    message = str(exc)
    if "Empty CSV file" in message:
        return (
            "the file is empty or has no complete header row: send a header row naming the "
            "columns, then one row per sample"
        )
    row = ROW.search(message)
    line = f"line {row.group(1)}" if row else "a line"
    ragged = RAGGED.search(message)
    if ragged:
        return (
            f"{line} has {ragged.group(2)} fields where the header names {ragged.group(1)} "
            "columns; every row must have one value per column"
        )
    column = COLUMN.search(message)
    not_a_number = NOT_A_NUMBER.search(message)
    if column and not_a_number and int(column.group(1)) < len(names):
        name = names[int(column.group(1))]
        return (
            f"{line}, column {name!r}: {not_a_number.group(1)!r} is not a number; feature "
            "columns must be numeric (only the target column may hold labels)"
        )
    return f"the CSV cannot be read: {message.removeprefix('CSV parse error: ')}"
