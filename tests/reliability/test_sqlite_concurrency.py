"""Two API processes and two workers on one SQLite file, under hundreds of concurrent requests."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import httpx
import pytest

from tests.reliability.conftest import Start
from tests.support import wait_for_job

pytestmark = pytest.mark.e2e

SUBMISSIONS = 240
POLLS = 400
PREDICTIONS = 400
CONCURRENCY = 32


def tiny_job(i: int) -> dict[str, object]:
    rng = random.Random(i)
    x = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(24)]
    return {
        "name": f"tiny-{i}",
        "data": {"x": x, "y": [[a * b] for a, b in x]},
        "model": {"hidden_layers": [8]},
        "training": {"epochs": 3, "batch_size": 8},
    }


async def hammer(urls: list[str], model_id: str) -> tuple[Counter[int], list[str]]:
    statuses: Counter[int] = Counter()
    submitted: list[str] = []
    gate = asyncio.Semaphore(CONCURRENCY)
    clients = [httpx.AsyncClient(base_url=url, timeout=60) for url in urls]

    async def call(i: int, kind: str) -> None:
        client = clients[i % len(clients)]
        async with gate:
            if kind == "submit":
                response = await client.post("/jobs", json=tiny_job(i))
                if response.status_code == 202:
                    submitted.append(response.json()["id"])
            elif kind == "poll":
                target = submitted[-1] if submitted else model_id
                response = await client.get(f"/jobs/{target}")
            else:
                response = await client.post(
                    f"/models/{model_id}/predict", json={"inputs": [[0.1 * (i % 7), -0.2]]}
                )
            statuses[response.status_code] += 1

    calls = (
        [("submit", i) for i in range(SUBMISSIONS)]
        + [("poll", i) for i in range(POLLS)]
        + [("predict", i) for i in range(PREDICTIONS)]
    )
    random.Random(0).shuffle(calls)
    try:
        await asyncio.gather(*(call(i, kind) for kind, i in calls))
    finally:
        for client in clients:
            await client.aclose()
    return statuses, submitted


def test_no_5xx_no_locks_and_every_job_claimed_once(start: Start) -> None:
    # All 240 jobs may be waiting at once: the active-job quota is not what this test is about.
    # Nor is keep-alive: on a machine busy with other tests a pooled connection can sit idle
    # past the 5 s default, and a request sent on it just as the server closes it reads a reset
    # (HTTP/1.1's race, which a client must retry; tests/test_connection_limits.py covers it).
    unlimited = {
        "SERVICE_MAX_ACTIVE_JOBS_PER_KEY": str(SUBMISSIONS * 2),
        "SERVICE_KEEP_ALIVE_SECONDS": "120",
    }
    apis = [start("api", "api-a", **unlimited), start("api", "api-b", **unlimited)]
    workers = [start("worker", "worker-a"), start("worker", "worker-b")]
    with httpx.Client(base_url=apis[0].url, timeout=30) as client:
        model_id = client.post("/jobs", json=tiny_job(-1)).json()["id"]
        assert wait_for_job(client, model_id)["status"] == "succeeded"

        statuses, submitted = asyncio.run(hammer([a.url for a in apis], model_id))
        assert set(statuses) == {200, 202}, statuses
        assert statuses[202] == SUBMISSIONS and len(set(submitted)) == SUBMISSIONS

        for job_id in submitted:
            job = wait_for_job(client, job_id, timeout=180)
            # attempts counts claims: exactly one claim per job, no retries.
            assert (job["status"], job["attempts"]) == ("succeeded", 1), job
    logs = "\n".join(p.log_tail(100_000) for p in [*apis, *workers])
    assert "database is locked" not in logs
    assert "Traceback" not in logs
