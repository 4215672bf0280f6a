"""A database the API cannot reach is a 503 that says so and asks for a retry, not a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.config import Settings

JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 3},
}


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # The URL names a directory: SQLite cannot open it, whoever runs the tests (root included,
    # which file permissions would not stop).
    folder = tmp_path_factory.mktemp("not-a-database")
    settings = Settings(database_url=f"sqlite:///{folder}", device="cpu")
    # Server errors come back as responses, so a missing 503 mapping shows as a 500 here.
    with TestClient(create_asgi_app(settings), raise_server_exceptions=False) as client:
        yield client


def assert_unavailable(response: Any) -> dict[str, str]:
    assert response.status_code == 503, response.text
    body: dict[str, str] = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == "unavailable", body
    return body


def test_healthz_is_503_when_the_database_cannot_be_reached(unreachable: TestClient) -> None:
    body = assert_unavailable(unreachable.get("/healthz"))
    assert "cannot be reached" in body["detail"]


def test_a_submission_is_503_with_retry_after(unreachable: TestClient) -> None:
    response = unreachable.post("/jobs", json=JOB)
    assert_unavailable(response)
    assert response.headers["Retry-After"] == "1"


def test_reads_are_503_too(unreachable: TestClient) -> None:
    assert_unavailable(unreachable.get("/jobs"))
    assert_unavailable(unreachable.post("/models/some-id/predict", json={"inputs": [[0.0]]}))


def test_the_same_requests_succeed_once_the_database_is_reachable(client: TestClient) -> None:
    # The control: nothing but the database makes the answers above 503s.
    assert client.get("/healthz").status_code == 200
    assert client.post("/jobs", json=JOB).status_code == 202
    assert client.get("/jobs").json()["total"] == 1
