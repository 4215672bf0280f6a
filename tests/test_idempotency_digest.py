"""An Idempotency-Key replay matches the request as sent, whatever the server's settings."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.config import Settings
from service.storage.db import Database

JOB = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}, "training": {"epochs": 3}}


def test_a_replay_after_the_server_s_limits_changed_still_returns_the_original_job(
    settings: Settings, db: Database
) -> None:
    key = {"Idempotency-Key": "nightly-7"}
    with TestClient(create_asgi_app(settings)) as before:
        first = before.post("/jobs", json=JOB, headers=key)
    assert first.status_code == 202
    # The operator lowers the runtime ceiling (which fills the job's max_runtime_seconds) and
    # the batch size the job asked for by default is clipped either way: nothing the client sent.
    changed = settings.model_copy(update={"max_runtime_seconds": 60.0})
    with TestClient(create_asgi_app(changed)) as after:
        replay = after.post("/jobs", json=JOB, headers=key)
        assert replay.status_code == 202, replay.text
        assert replay.json()["id"] == first.json()["id"]
        assert replay.headers["idempotent-replayed"] == "true"
        assert after.get("/jobs").json()["total"] == 1
        other = {**JOB, "training": {"epochs": 4}}
        assert after.post("/jobs", json=other, headers=key).status_code == 422
