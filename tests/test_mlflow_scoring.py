"""MLflow's scoring bodies: every form read into rows, columns matched by name or position."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.api.mlflow_scoring import (
    ScoringInput,
    model_columns,
    parse_csv_body,
    parse_json_body,
    predictions_body,
)
from service.errors import BadRequest


def parse(body: object) -> ScoringInput:
    return parse_json_body(json.dumps(body).encode())


def test_scalar_instances_are_one_feature() -> None:
    scoring = parse({"instances": [1.0, 2.0, 3.0]})
    assert scoring.rows.shape == (3, 1) and scoring.columns is None


def test_named_columns_are_reordered_and_extras_ignored() -> None:
    scoring = parse({"dataframe_split": {"columns": ["b", "x", "a"], "data": [[2, 9, 1]]}})
    np.testing.assert_array_equal(model_columns(scoring, ["a", "b"], "m"), [[1.0, 2.0]])
    # Without names on the model, the body's order is the model's.
    np.testing.assert_array_equal(model_columns(scoring, None, "m"), [[2.0, 9.0, 1.0]])


def test_csv_reads_a_header_and_numbers() -> None:
    scoring = parse_csv_body(b"\xef\xbb\xbfa, b\r\n1,2\r\n\r\n3.5,-4e2\r\n")
    assert scoring.columns == ["a", "b"]
    np.testing.assert_array_equal(scoring.rows, [[1.0, 2.0], [3.5, -400.0]])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"a,b\n", "header row and at least one row"),
        (b"a,b\n1,2,3\n", "line 2 has 3 values"),
        (b"a,b\n1,x\n", "line 2: every value must be a number"),
        (b"a,b\n1,nan\n", "NaN or infinite"),
        (b"a,a\n1,2\n", "repeats a column name"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_bad_csv_is_a_400_that_names_the_line(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse_csv_body(body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "exactly one of"),
        ({"instances": [[1]], "inputs": [[1]]}, "exactly one of"),
        ({"instances": [[1]], "extra": 1}, "exactly one of"),
        ({"instances": [[1]], "params": 3}, "params must be an object"),
        ({"dataframe_split": {"columns": ["a"]}}, "with data"),
        ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "names 2 columns"),
        ({"dataframe_records": [{"a": 1}, {"b": 2}]}, r"dataframe_records\[1\] has columns"),
        ({"dataframe_records": []}, "non-empty list"),
        ({"inputs": {"a": [1, 2], "b": [1]}}, "all of one length"),
        ({"inputs": [[1, True]]}, "finite number"),
        ({"inputs": [[1], [2, 3]]}, "rectangular"),
        ({"inputs": []}, "at least one row"),
    ],
)
def test_bad_json_is_a_400_that_says_why(body: object, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        parse(body)


def test_a_missing_named_column_is_named() -> None:
    scoring = parse({"dataframe_records": [{"a": 1}]})
    with pytest.raises(BadRequest, match="missing: b"):
        model_columns(scoring, ["a", "b"], "m")


def test_one_output_answers_one_value_per_row() -> None:
    one = predictions_body(np.array([[1.0], [2.0]]), None)["predictions"]
    two = predictions_body(np.array([[1.0, 2.0]]), None)["predictions"]
    assert np.asarray(one).shape == (2,) and np.asarray(two).shape == (1, 2)
    assert predictions_body(None, ["red"]) == {"predictions": ["red"]}
