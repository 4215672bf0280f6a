"""Per-key quotas: active jobs and stored bytes, checked when a job is submitted.

The 429s come from a real API process (the quota is read from its environment, the error
crosses the HTTP layer with its Retry-After); the byte accounting and the race between
concurrent submits are checked at the queue, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service import quota
from service.config import Settings
from service.errors import QuotaExceeded
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Job
from service.submission import build_job
from tests.databases import BACKENDS, migrated_database
from tests.support import ServiceProcess, placeholder_model

TINY: dict[str, Any] = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}}
KEYS = "alice-key,bob-key"


def tiny_job(owner: str = "") -> Job:
    job = build_job(JobCreate.model_validate(TINY), Settings())
    job.owner = owner
    return job


@contextmanager
def api_process(database_url: str, tmp_path: Path, **env: str) -> Iterator[ServiceProcess]:
    upgrade(database_url)
    process = ServiceProcess(
        database_url,
        "api",
        log_path=tmp_path / "api.log",
        env={"SERVICE_API_KEYS": KEYS, **env},
    ).start()
    try:
        yield process
    finally:
        process.stop()


def as_key(process: ServiceProcess, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=process.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def test_a_key_at_its_active_job_quota_gets_429_while_another_key_still_submits(
    database_url: str, tmp_path: Path
) -> None:
    with (
        api_process(database_url, tmp_path, SERVICE_MAX_ACTIVE_JOBS_PER_KEY="3") as api,
        as_key(api, "alice-key") as alice,
        as_key(api, "bob-key") as bob,
    ):
        first, *_ = [
            alice.post("/jobs", json=TINY, headers={"Idempotency-Key": f"a{i}"}).json()["id"]
            for i in range(3)
        ]
        refused = alice.post("/jobs", json=TINY)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "quota_exceeded"
        assert "3 queued or running jobs" in refused.json()["detail"]
        assert int(refused.headers["Retry-After"]) > 0

        assert bob.post("/jobs", json=TINY).status_code == 202  # Alice's quota is hers alone

        # A replay stores nothing new: answered even at the quota.
        replay = alice.post("/jobs", json=TINY, headers={"Idempotency-Key": "a0"})
        assert replay.status_code == 202 and replay.json()["id"] == first
        assert replay.headers["Idempotent-Replayed"] == "true"

        assert alice.post(f"/jobs/{first}/cancel").json()["status"] == "cancelled"
        assert alice.post("/jobs", json=TINY).status_code == 202  # the cancel freed a slot


def test_a_key_past_its_stored_bytes_gets_429_until_it_deletes(
    database_url: str, tmp_path: Path
) -> None:
    size = len(tiny_job().data)
    limit = 2 * size + size // 2  # room for two jobs' data, not three
    with (
        api_process(database_url, tmp_path, SERVICE_MAX_STORED_BYTES_PER_KEY=str(limit)) as api,
        as_key(api, "alice-key") as alice,
        as_key(api, "bob-key") as bob,
    ):
        kept, dropped = (alice.post("/jobs", json=TINY).json()["id"] for _ in range(2))
        refused = alice.post("/jobs", json=TINY)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"] == "quota_exceeded"
        assert f"limit of {limit} bytes" in refused.json()["detail"]
        assert "Retry-After" in refused.headers
        assert bob.post("/jobs", json=TINY).status_code == 202

        alice.post(f"/jobs/{dropped}/cancel").raise_for_status()
        # Cancelled, its data is still stored; deleted, it is not.
        assert alice.post("/jobs", json=TINY).status_code == 429
        assert alice.delete(f"/models/{dropped}").status_code == 204
        assert alice.post("/jobs", json=TINY).status_code == 202
        assert alice.get(f"/jobs/{kept}").status_code == 200


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_idempotency_key_is_refused(client: TestClient, blank: str) -> None:
    response = client.post("/jobs", json=TINY, headers={"Idempotency-Key": blank})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error" and "idempotency-key" in body["detail"]
    assert client.get("/jobs").json()["total"] == 0


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


def test_concurrent_submits_cannot_overshoot_the_quota(any_db: Database) -> None:
    limits = quota.Quota(max_active_jobs=5, max_stored_bytes=10**9)
    start = threading.Barrier(12)

    def submit(_: int) -> bool:
        start.wait()
        try:
            queue.enqueue_once(any_db, tiny_job("alice"), limits)
        except QuotaExceeded:
            return False
        return True

    with ThreadPoolExecutor(max_workers=12) as pool:
        accepted = sum(pool.map(submit, range(12)))
    assert accepted == 5


def stored_bytes(db: Database, job_id: str) -> int:
    with db.read() as session:
        stored = session.scalar(select(Job.stored_bytes).where(Job.id == job_id))
    assert stored is not None
    return stored


def test_a_job_s_stored_bytes_follow_its_blobs(any_db: Database) -> None:
    job = tiny_job("alice")
    queue.enqueue_once(any_db, job)
    data = len(job.data)
    assert stored_bytes(any_db, job.id) == data
    assert queue.claim(any_db, "w1", 30) == job.id
    queue.save_checkpoint(any_db, job.id, "w1", [], 1, b"c" * 100)
    assert stored_bytes(any_db, job.id) == data + 100
    queue.save_checkpoint(any_db, job.id, "w1", [], 2, b"c" * 40)  # replaces the first
    assert stored_bytes(any_db, job.id) == data + 40
    model = placeholder_model(job.id)
    model.weights = b"w" * 700
    queue.finish_succeeded(any_db, job.id, "w1", model, [], None)
    assert stored_bytes(any_db, job.id) == data + 700  # the checkpoint went with the end
    with any_db.read() as session:
        assert quota.stored_bytes_of(session, "alice") == data + 700
        assert quota.stored_bytes_of(session, "bob") == 0
    queue.delete_job(any_db, job.id)
    with any_db.read() as session:
        assert quota.stored_bytes_of(session, "alice") == 0
