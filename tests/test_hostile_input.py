"""Hostile and malformed requests get 4xx, never 5xx, and stored bytes are never unpickled."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.api.app import create_asgi_app
from service.config import Settings
from service.storage.db import Database
from service.storage.models import Model
from service.training.worker import Worker

JOB = {
    "data": {"x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0]], "y": [[0.1], [0.2], [0.3]]},
    "training": {"epochs": 2},
}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def small_bodies(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(
        create_asgi_app(settings.model_copy(update={"max_body_bytes": 4096}))
    ) as client:
        yield client


def nested(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


@pytest.mark.parametrize("path", ["/jobs", "/models/some-id/predict"])
@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"\xff\xfe\x00",
        b'{"data": }',
        ('{"data": {"x": ' + nested(100_000) + "}}").encode(),
        ('{"inputs": ' + nested(100_000) + "}").encode(),
        b'{"inputs": [["1.5", "2"]]}',
        b'{"data": {"x": [["a"]], "y": [["b"]]}}',
    ],
)
def test_malformed_bodies_are_422(client: TestClient, path: str, body: bytes) -> None:
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == 422, response.text
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/models/..%2F..%2Fetc%2Fpasswd",
        "/jobs/%00",
        "/models/" + "a" * 5000,
        "/jobs/' OR 1=1 --",
    ],
)
def test_strange_ids_are_404(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_an_oversized_body_is_413_with_content_length(small_bodies: TestClient) -> None:
    body = json.dumps({"data": {"x": [[1.0]] * 2000, "y": [[1.0]] * 2000}})
    response = small_bodies.post("/jobs", content=body, headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert small_bodies.get("/jobs").json()["total"] == 0


def test_an_oversized_chunked_body_is_413(small_bodies: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": ['
        for _ in range(2000):
            yield b"[1.0, 2.0],"
        yield b"[1.0, 2.0]]}"

    for path in ("/jobs", "/models/any/predict"):
        response = small_bodies.post(path, content=chunks(), headers=JSON)
        assert response.request.headers.get("transfer-encoding") == "chunked"
        assert response.status_code == 413, path


def test_a_pickle_planted_in_stored_weights_never_runs(
    client: TestClient, settings: Settings, db: Database, tmp_path: Path
) -> None:
    job_id = client.post("/jobs", json=JOB).json()["id"]
    assert Worker(settings, db).run_once()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    with db.write() as session:
        session.execute(
            update(Model).where(Model.id == job_id).values(weights=pickle.dumps(Payload()))
        )
    response = client.post(f"/models/{job_id}/predict", json={"inputs": [[1.0, 2.0]]})
    assert response.status_code == 409
    assert response.json()["error"] == "model_unusable"
    assert not marker.exists()


@pytest.mark.parametrize(
    "query", ["offset=313402158567317962752", "offset=-1", "limit=10000", "limit=abc"]
)
def test_out_of_range_pagination_is_422(client: TestClient, query: str) -> None:
    for path in ("/jobs", "/models"):
        response = client.get(f"{path}?{query}")
        assert response.status_code == 422, (path, query)
    assert client.get("/jobs?status=../../etc").status_code == 422
