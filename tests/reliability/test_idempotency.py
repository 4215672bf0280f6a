"""Idempotency-Key on POST /jobs, against a real API process."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.e2e

JOB = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}, "training": {"epochs": 3}}


def test_a_replay_returns_the_original_job(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = api.post("/jobs", json=JOB, headers=headers)
    # Same request, other key order: still the same request.
    reordered = {"training": JOB["training"], "data": JOB["data"]}
    replay = api.post("/jobs", json=reordered, headers=headers)
    assert first.status_code == replay.status_code == 202
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["location"] == first.headers["location"]
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert api.get("/jobs").json()["total"] == 1


def test_the_same_key_with_another_body_is_422_and_stores_nothing(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert api.post("/jobs", json=JOB, headers=headers).status_code == 202
    other = copy.deepcopy(JOB)
    other["training"]["epochs"] = 4
    response = api.post("/jobs", json=other, headers=headers)
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert api.get("/jobs").json()["total"] == 1


def test_twenty_concurrent_identical_submissions_create_one_job(api: httpx.Client) -> None:
    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=str(api.base_url), timeout=30) as client:
            return client.post("/jobs", json=JOB, headers={"Idempotency-Key": "burst"})

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(submit, range(20)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert api.get("/jobs").json()["total"] == 1


def test_without_a_key_every_submission_is_a_new_job(api: httpx.Client) -> None:
    ids = {api.post("/jobs", json=JOB).json()["id"] for _ in range(3)}
    assert len(ids) == 3
