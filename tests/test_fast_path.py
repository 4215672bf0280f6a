"""The predict fast path answers ordinary requests itself, and byte for byte as the route would;
everything else (errors included) it leaves to the route. Micro-batches stay short."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app, create_asgi_app
from service.api.gate import Gate
from service.api.instrumentation import RequestMetrics
from service.api.micro_batch import MicroBatcher
from service.api.predict_fast_path import PredictFastPath
from service.config import Settings
from service.storage.db import Database
from service.training.worker import Worker
from tests.test_micro_batch import concurrently, counting, predictor, requests

REGRESSION = {
    "data": {
        "x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]],
        "y": [[0.0], [0.3], [0.6], [0.9]],
    },
    "training": {"epochs": 3, "batch_size": 2},
}
CLASSIFICATION = {
    "task": "classification",
    "data": {"x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]], "y": ["a", "b", "a", "b"]},
    "training": {"epochs": 3, "batch_size": 2},
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def both(
    settings: Settings, db: Database
) -> Iterator[tuple[TestClient, TestClient, PredictFastPath]]:
    """The served app (fast path in front) and the bare FastAPI app, on one database."""
    served = create_asgi_app(settings)
    assert isinstance(served, RequestMetrics) and isinstance(served.app, Gate)
    assert isinstance(served.app.app, PredictFastPath)
    with TestClient(served) as fast, TestClient(create_app(settings)) as route:
        yield fast, route, served.app.app


def trained(client: TestClient, settings: Settings, db: Database, body: dict[str, Any]) -> str:
    job_id: str = client.post("/jobs", json=body).json()["id"]
    assert Worker(settings, db).run_once()
    return job_id


def test_the_fast_path_answers_ordinary_requests_itself(
    both: tuple[TestClient, TestClient, PredictFastPath], settings: Settings, db: Database
) -> None:
    fast, _, served = both
    model_id = trained(fast, settings, db, REGRESSION)
    body = b'{"inputs": [[1.0, 2.0], [0.5, 0.5]]}'
    assert fast.post(f"/models/{model_id}/predict", content=body, headers=JSON).status_code == 200
    # Now cached: the fast path has the answer without the framework.
    scope = {"type": "http", "headers": []}
    answer = fast.portal.call(served.answer, scope, model_id, body)  # type: ignore[union-attr]
    assert answer == fast.post(f"/models/{model_id}/predict", content=body, headers=JSON).content


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": [[1.0, 2.0]]}',
        b'{"inputs": [[1.0, 2.0], [-3.5, 7.25], [0, 1]]}',
        b'{"inputs": [[1.0]]}',  # wrong feature count: 422
        b'{"inputs": [[1.0, NaN]]}',  # not JSON: 422
        b'{"inputs": []}',  # 422
        b'{"rows": [[1.0, 2.0]]}',  # unknown field: 422
        b"[1, 2]",  # not an object: 422
    ],
)
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_fast_path_and_the_route_answer_with_the_same_bytes(
    both: tuple[TestClient, TestClient, PredictFastPath],
    settings: Settings,
    db: Database,
    body: bytes,
    task: str,
) -> None:
    fast, route, _ = both
    model_id = trained(fast, settings, db, REGRESSION if task == "regression" else CLASSIFICATION)
    path = f"/models/{model_id}/predict"
    fast.post(path, content=b'{"inputs": [[0.0, 0.0]]}', headers=JSON)  # cached from now on
    answers = [client.post(path, content=body, headers=JSON) for client in (fast, route)]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].content == answers[1].content


def test_unknown_and_unready_models_are_answered_alike(
    both: tuple[TestClient, TestClient, PredictFastPath], settings: Settings
) -> None:
    fast, route, _ = both
    queued = fast.post("/jobs", json=REGRESSION).json()["id"]  # no worker: stays queued (409)
    for path, status in ((f"/models/{queued}/predict", 409), ("/models/nope/predict", 404)):
        answers = [c.post(path, json={"inputs": [[1.0, 2.0]]}) for c in (fast, route)]
        assert [a.status_code for a in answers] == [status, status]
        assert answers[0].content == answers[1].content


def test_a_micro_batch_on_a_wide_model_is_flushed_by_its_work_not_its_rows() -> None:
    # As if each row cost 10,000 weights: a batch holds at most 3 rows' worth of 30,000.
    wide, calls = counting(predictor(), n_parameters=10_000)
    inputs = requests(40)
    asyncio.run(concurrently(MicroBatcher(max_work=30_000), wide, inputs))
    assert sum(calls) == sum(len(rows) for rows in inputs)  # every row answered once
    assert len(calls) > 1 and max(calls) <= 3 + 2  # flushed when a request took it past


def v2_bodies() -> list[tuple[bytes, dict[str, str]]]:
    """Open Inference Protocol requests (each with an id, so answers compare byte for byte):
    JSON, binary in and out, and ones the route must answer with an error."""
    tensor = {"name": "inputs", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 0.5, 0]}
    binary_head = orjson.dumps(
        {
            "id": "b",
            "inputs": [{**tensor, "data": None, "parameters": {"binary_data_size": 32}}],
            "parameters": {"binary_data_output": True},
        }
    ).replace(b',"data":null', b"")
    values = np.array([[1.0, 2.0], [0.5, 0.0]], dtype="<f8").tobytes()
    return [
        (orjson.dumps({"id": "a", "inputs": [tensor]}), JSON),
        (binary_head + values, {"Inference-Header-Content-Length": str(len(binary_head))}),
        (orjson.dumps({"id": "c", "inputs": [{**tensor, "name": "x"}]}), JSON),  # 400
        (orjson.dumps({"id": "d", "inputs": [tensor], "outputs": [{"name": "nope"}]}), JSON),
        (b"{", JSON),  # 400
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_v2_fast_path_and_route_answer_with_the_same_bytes(
    both: tuple[TestClient, TestClient, PredictFastPath],
    settings: Settings,
    db: Database,
    case: int,
    task: str,
) -> None:
    fast, route, served = both
    model_id = trained(fast, settings, db, REGRESSION if task == "regression" else CLASSIFICATION)
    path = f"/v2/models/{model_id}/infer"
    body, headers = v2_bodies()[case]
    fast.post(path, content=v2_bodies()[0][0], headers=JSON)  # cached from now on
    answers = [client.post(path, content=body, headers=headers) for client in (fast, route)]
    assert answers[0].status_code == answers[1].status_code
    assert answers[0].content == answers[1].content
    for header in ("content-type", "inference-header-content-length"):
        assert answers[0].headers.get(header) == answers[1].headers.get(header)
    answered_itself = fast.portal.call(  # type: ignore[union-attr]
        served.answer_infer,
        {"type": "http", "headers": []},
        model_id,
        body,
        {name.lower().encode(): value.encode() for name, value in headers.items()},
    )
    assert (answered_itself is not None) == (answers[0].status_code == 200)
