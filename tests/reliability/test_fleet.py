"""Real worker processes join the fleet registry, and a job that requires a device they lack
waits in the queue, saying why, instead of failing or landing on the wrong device."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.conftest import Start
from tests.support import wait_for_job

pytestmark = pytest.mark.e2e

JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 5, "batch_size": 2},
}


def test_a_cpu_fleet_leaves_a_cuda_job_queued_and_says_why(api: httpx.Client, start: Start) -> None:
    worker = start("worker")
    deadline = time.monotonic() + 30
    while not (workers := api.get("/workers").json()["workers"]):
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.05)
    assert [w["devices"] for w in workers] == [["cpu"]]

    on_gpu = api.post("/jobs", json={**JOB, "resources": {"device": "cuda"}}).json()["id"]
    anywhere = api.post("/jobs", json=JOB).json()["id"]
    assert wait_for_job(api, anywhere)["status"] == "succeeded"  # the queue is not blocked
    time.sleep(1.0)  # several polls of the idle worker
    waiting = api.get(f"/jobs/{on_gpu}").json()
    assert waiting["status"] == "queued" and waiting["attempts"] == 0
    assert waiting["warnings"] == [
        "waiting for a worker with cuda: none is alive; the job stays queued until one starts"
    ]

    assert worker.stop(timeout=15) == 0
    assert api.get("/workers").json() == {"workers": []}  # a stopped worker leaves the registry
