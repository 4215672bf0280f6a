"""Property-based tests of the validation rules: what passes is usable, what fails says why."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from service.api.app import create_asgi_app
from service.api.json_io import rows_of_numbers
from service.config import Settings
from service.schemas import JobCreate
from service.storage.migrate import upgrade
from service.storage.store import decode_dataset
from service.submission import build_job

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
SETTINGS = Settings(database_url="sqlite://")


@st.composite
def datasets(draw: st.DrawFn) -> tuple[list[list[float]], list[list[float]]]:
    n_rows = draw(st.integers(1, 30))
    n_features = draw(st.integers(1, 5))
    n_outputs = draw(st.integers(1, 3))
    x = draw(
        st.lists(
            st.lists(finite, min_size=n_features, max_size=n_features),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    y = draw(
        st.lists(
            st.lists(finite, min_size=n_outputs, max_size=n_outputs),
            min_size=n_rows,
            max_size=n_rows,
        )
    )
    return x, y


@settings(max_examples=150, deadline=None)
@given(data=datasets(), batch_size=st.integers(1, 1000), fraction=st.sampled_from([0.0, 0.2, 0.5]))
def test_valid_data_becomes_a_job_whose_stored_data_round_trips(
    data: tuple[list[list[float]], list[list[float]]], batch_size: int, fraction: float
) -> None:
    x, y = data
    body = {
        "data": {"x": x, "y": y},
        "training": {"batch_size": batch_size, "validation_fraction": fraction},
    }
    n_val = round(len(x) * fraction)
    if fraction and (n_val < 1 or len(x) - n_val < 1):
        with pytest.raises(ValidationError, match="validation_fraction"):
            JobCreate.model_validate(body)
        return
    job = build_job(JobCreate.model_validate(body), SETTINGS)
    stored = decode_dataset(job.data)
    np.testing.assert_array_equal(stored.x, np.asarray(x))
    np.testing.assert_array_equal(stored.y, np.asarray(y))
    assert 1 <= job.spec["training"]["batch_size"] <= len(x) - n_val
    assert (job.spec["training"]["batch_size"] < batch_size) == any(
        "clipped" in w for w in job.warnings
    )


@settings(max_examples=100, deadline=None)
@given(
    data=datasets(),
    in_y=st.booleans(),
    row=st.integers(0, 29),
    column=st.integers(0, 4),
    bad=non_finite,
)
def test_a_non_finite_value_anywhere_is_refused(
    data: tuple[list[list[float]], list[list[float]]],
    in_y: bool,
    row: int,
    column: int,
    bad: float,
) -> None:
    x, y = data
    target = y if in_y else x
    cells = target[row % len(target)]
    cells[column % len(cells)] = bad
    with pytest.raises(ValidationError, match="finite"):
        JobCreate.model_validate({"data": {"x": x, "y": y}})


@settings(max_examples=100, deadline=None)
@given(data=datasets(), row=st.integers(0, 29))
def test_a_ragged_row_is_refused(
    data: tuple[list[list[float]], list[list[float]]], row: int
) -> None:
    x, y = data
    assume(len(x) > 1)  # one row cannot be ragged against itself
    x[row % len(x)] = [*x[row % len(x)], 1.0]
    with pytest.raises(ValidationError, match="one length"):
        JobCreate.model_validate({"data": {"x": x, "y": y}})


@settings(max_examples=100, deadline=None)
@given(labels=st.lists(st.text(min_size=1, max_size=5), min_size=2, max_size=40))
def test_labels_become_sorted_classes_that_map_back(labels: list[str]) -> None:
    body = {
        "task": "classification",
        "data": {"x": [[float(i)] for i in range(len(labels))], "y": labels},
    }
    if len(set(labels)) < 2:
        with pytest.raises(ValidationError, match="two distinct labels"):
            JobCreate.model_validate(body)
        return
    stored = decode_dataset(build_job(JobCreate.model_validate(body), SETTINGS).data)
    assert stored.classes == sorted(set(labels))
    assert [stored.classes[i] for i in stored.y] == labels


json_values = st.recursive(
    st.none() | st.booleans() | finite | non_finite | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=20,
)


def has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(has_non_finite(item) for item in value.values())
    return False


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # Module-scoped: hypothesis runs every example inside one call of the test.
    folder = tmp_path_factory.mktemp("predict-bodies")
    url = f"sqlite:///{folder / 'service.db'}"
    upgrade(url)  # an empty database, so a well-formed request finds no model: a 404
    app = create_asgi_app(Settings(database_url=url))
    with TestClient(app) as client:
        yield client


@settings(max_examples=300, deadline=None)
@given(body=json_values | st.fixed_dictionaries({"inputs": json_values}))
@example(body={"inputs": [[1.0, math.nan]]})
@example(body={"inputs": [[math.inf], [0.0]]})
@example(body={"inputs": [[-math.inf, 2]]})
def test_predict_bodies_either_parse_to_a_matrix_or_are_refused_with_a_reason(
    api: TestClient, body: Any
) -> None:
    # JSON has no NaN or Infinity, so a client that sends them sends these bare tokens, which
    # is what json.dumps writes; the body goes to the service as text, as a client's would.
    raw = json.dumps(body)
    response = api.post(
        "/models/no-such-model/predict",
        content=raw,
        headers={"Content-Type": "application/json"},
    )
    if has_non_finite(body) or response.status_code == 422:
        assert response.status_code == 422, (raw, response.text)
        refusal = response.json()
        assert set(refusal) == {"error", "detail"} and refusal["detail"]
        return
    # Inputs that pass reach the model lookup, which finds no such model.
    assert response.status_code == 404, (raw, response.text)
    matrix = rows_of_numbers(body)
    assert matrix.ndim == 2 and matrix.dtype == np.float64 and matrix.shape[1] >= 1
