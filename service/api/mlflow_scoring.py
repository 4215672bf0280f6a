"""MLflow's scoring protocol on the wire (what `mlflow models serve` answers at /invocations).

A JSON body holds exactly one of `dataframe_split`, `dataframe_records`, `instances` or
`inputs` (and optionally `params`, which these models do not take); a `text/csv` body is a
table with a header row. Some forms name their columns (split, records, CSV, instances or
inputs as objects), others are rows by position. Named columns are matched to the model's
feature names when it has them; otherwise every form is read by position.

Every problem with a body is a BadRequest (400), as MLflow answers it.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.api.json_io import numbers_array
from service.errors import BadRequest

JSON_FORMS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@dataclass(frozen=True)
class ScoringInput:
    rows: np.ndarray  # float64, one row per example
    columns: list[str] | None  # the body's names for the columns, when it gave them


def parse_json_body(body: bytes) -> ScoringInput:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise BadRequest(f"the body must be a JSON object with one of {', '.join(JSON_FORMS)}")
    forms = [key for key in JSON_FORMS if key in document]
    unknown = sorted(set(document) - {*JSON_FORMS, "params"})
    if len(forms) != 1 or unknown:
        raise BadRequest(
            f"the body must hold exactly one of {', '.join(JSON_FORMS)} (and optionally params); "
            f"it holds {', '.join(sorted(document)) or 'nothing'}"
        )
    if not isinstance(document.get("params", {}), dict):
        raise BadRequest("params must be an object")
    form = forms[0]
    content = document[form]
    if form == "dataframe_split":
        return _split(content)
    if form == "dataframe_records":
        return _records(content, form)
    return _tensor_form(content, form)


def _split(content: Any) -> ScoringInput:
    if not isinstance(content, dict) or "data" not in content:
        raise BadRequest("dataframe_split must be an object with data (and columns)")
    rows = _matrix(content["data"], "dataframe_split.data")
    columns = content.get("columns")
    if columns is None:
        return ScoringInput(rows, None)
    names = _names(columns, "dataframe_split.columns")
    if len(names) != rows.shape[1]:
        raise BadRequest(
            f"dataframe_split names {len(names)} columns but its rows have {rows.shape[1]} values"
        )
    return ScoringInput(rows, names)


def _records(content: Any, where: str) -> ScoringInput:
    """A list of {column: value} objects, all with the same columns."""
    if not isinstance(content, list) or not content:
        raise BadRequest(f"{where} must be a non-empty list of objects")
    if not all(isinstance(record, dict) for record in content):
        raise BadRequest(f"{where} must be a list of objects, one per row")
    names = list(content[0])
    for index, record in enumerate(content):
        if set(record) != set(names):
            raise BadRequest(
                f"{where}[{index}] has columns {sorted(record)}, unlike the first row's "
                f"{sorted(names)}: every row needs a value in every column"
            )
    rows = numbers_array([[record[name] for name in names] for record in content], where)
    return ScoringInput(_two_dimensional(rows, where), names)


def _tensor_form(content: Any, where: str) -> ScoringInput:
    """`instances` / `inputs`: rows, scalars (one feature), objects per row, or columns."""
    if isinstance(content, dict):  # columnar: {column: [value per row]}
        names = list(content)
        if not names:
            raise BadRequest(f"{where} names no columns")
        columns = [numbers_array(content[name], f"{where}.{name}") for name in names]
        if any(column.ndim != 1 for column in columns) or len({len(c) for c in columns}) != 1:
            raise BadRequest(f"{where}: every column must be a flat list, all of one length")
        return ScoringInput(_two_dimensional(np.column_stack(columns), where), names)
    if isinstance(content, list) and content and all(isinstance(row, dict) for row in content):
        return _records(content, where)
    values = numbers_array(content, where)
    if values.ndim == 1:  # one value per row: a single feature
        values = values.reshape(-1, 1)
    return ScoringInput(_two_dimensional(values, where), None)


def parse_csv_body(body: bytes) -> ScoringInput:
    """A CSV table with a header row, as `mlflow models serve` reads it (pandas' default)."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text ({exc})") from exc
    reader = csv.reader(io.StringIO(text))
    lines = [line for line in reader if line]
    if len(lines) < 2:
        raise BadRequest("the CSV body needs a header row and at least one row of values")
    names = [name.strip() for name in lines[0]]
    rows = []
    for line_number, line in enumerate(lines[1:], start=2):
        if len(line) != len(names):
            raise BadRequest(
                f"CSV line {line_number} has {len(line)} values; the header names {len(names)}"
            )
        try:
            rows.append([float(cell) for cell in line])
        except ValueError as exc:
            raise BadRequest(
                f"CSV line {line_number}: every value must be a number ({exc})"
            ) from exc
    values = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadRequest("the CSV holds NaN or infinite values; every value must be finite")
    return ScoringInput(values, _names(names, "the CSV header"))


def _matrix(data: Any, where: str) -> np.ndarray:
    return _two_dimensional(numbers_array(data, where), where)


def _two_dimensional(values: np.ndarray, where: str) -> np.ndarray:
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise BadRequest(f"{where} must hold at least one row of at least one value")
    return values.astype(np.float64, copy=False)


def _names(columns: Any, where: str) -> list[str]:
    if not isinstance(columns, list) or not all(isinstance(name, str) for name in columns):
        raise BadRequest(f"{where} must be a list of column names")
    if len(set(columns)) != len(columns):
        raise BadRequest(f"{where} repeats a column name")
    return list(columns)


def model_columns(
    scoring: ScoringInput, feature_names: list[str] | None, model_id: str
) -> np.ndarray:
    """The rows with their columns in the model's order: by name when both the body and the
    model name them (extra columns are ignored, as MLflow does), by position otherwise."""
    if scoring.columns is None or feature_names is None:
        return scoring.rows
    missing = [name for name in feature_names if name not in scoring.columns]
    if missing:
        raise BadRequest(
            f"model {model_id} needs the columns {', '.join(feature_names)}; "
            f"missing: {', '.join(missing)}"
        )
    position = {name: index for index, name in enumerate(scoring.columns)}
    return scoring.rows[:, [position[name] for name in feature_names]]


def predictions_body(
    values: np.ndarray | None, labels: list[Any] | None
) -> dict[str, list[Any] | np.ndarray]:
    """`{"predictions": ...}`: labels for a classifier; for a regressor one value per row when
    it has one output (as scikit-learn models served by MLflow answer), else rows."""
    if labels is not None:
        return {"predictions": labels}
    assert values is not None
    return {"predictions": values[:, 0] if values.shape[1] == 1 else values}
