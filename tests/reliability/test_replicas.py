"""Two API processes on one database agree: a model deleted through one stops answering on the
other within a poll of the deletion log (DELETION_POLL_SECONDS), though both had it cached."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.reliability.conftest import Start
from tests.support import wait_for_job

pytestmark = pytest.mark.e2e

JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 3, "batch_size": 2},
}
PREDICT = {"inputs": [[1.5]]}


def test_a_model_deleted_through_one_replica_stops_answering_on_the_other(start: Start) -> None:
    first, second = start("api", "api-a"), start("api", "api-b")
    start("worker")
    with httpx.Client(base_url=first.url) as a, httpx.Client(base_url=second.url) as b:
        model_id = a.post("/jobs", json=JOB).json()["id"]
        assert wait_for_job(a, model_id)["status"] == "succeeded"
        for replica in (a, b):  # both load it into their caches
            for _ in range(3):
                assert replica.post(f"/models/{model_id}/predict", json=PREDICT).status_code == 200

        assert a.delete(f"/models/{model_id}").status_code == 204
        deleted_at = time.monotonic()
        assert a.post(f"/models/{model_id}/predict", json=PREDICT).status_code == 404
        while (answer := b.post(f"/models/{model_id}/predict", json=PREDICT)).status_code == 200:
            assert time.monotonic() - deleted_at < 10, "the other replica still serves it"
            time.sleep(0.02)
        assert answer.status_code == 404 and answer.json()["error"] == "not_found"
        print(f"the other replica refused it {time.monotonic() - deleted_at:.2f} s after DELETE")
        assert b.get(f"/models/{model_id}").status_code == 404
