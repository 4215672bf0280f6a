"""A deleted model stops answering on every API process, however the deletion raced a load."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from service.config import Settings
from service.inference import PredictorCache
from service.storage import queue
from service.storage.db import Database
from service.storage.models import ModelDeletion, utcnow
from service.training.worker import Worker
from service.tuning import DELETION_LOG_KEEP

TINY = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 2, "batch_size": 2},
}


def trained(client: TestClient, settings: Settings, db: Database) -> str:
    job_id: str = client.post("/jobs", json=TINY).json()["id"]
    assert Worker(settings, db).run_once()
    return job_id


def test_a_deletion_through_another_process_reaches_this_one_s_cache(
    client: TestClient, settings: Settings, db: Database
) -> None:
    model_id = trained(client, settings, db)
    other_process = PredictorCache(db, capacity=8)
    assert other_process.get(model_id).model_id == model_id
    queue.delete_job(db, model_id)  # as DELETE does, through this process
    assert other_process.cached(model_id) is not None  # until it reads the deletion log
    other_process.refresh()
    assert other_process.cached(model_id) is None


def test_a_load_that_read_the_model_before_its_deletion_does_not_cache_it(
    client: TestClient, settings: Settings, db: Database
) -> None:
    model_id = trained(client, settings, db)
    cache = PredictorCache(db, capacity=8)

    def deleted_meanwhile(owner: str) -> bool:
        # Called while the load reads the model: another process deletes it, and this one's
        # watcher hears of it before the load finishes.
        queue.delete_job(db, model_id)
        cache.refresh()
        return True

    assert cache.get(model_id, deleted_meanwhile).model_id == model_id  # the racing request
    assert cache.cached(model_id) is None  # but nothing serves it afterwards


def test_the_api_stops_serving_a_deleted_model_at_once(
    client: TestClient, settings: Settings, db: Database
) -> None:
    model_id = trained(client, settings, db)
    body = {"inputs": [[1.0]]}
    assert client.post(f"/models/{model_id}/predict", json=body).status_code == 200
    assert client.delete(f"/models/{model_id}").status_code == 204
    gone = client.post(f"/models/{model_id}/predict", json=body)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


def test_the_deletion_log_is_pruned_but_its_sequence_never_goes_back(
    client: TestClient, settings: Settings, db: Database
) -> None:
    first, second = trained(client, settings, db), trained(client, settings, db)
    queue.delete_job(db, first)
    with db.write() as session:
        for entry in session.scalars(select(ModelDeletion)):
            entry.deleted_at = utcnow() - DELETION_LOG_KEEP - timedelta(seconds=1)
    (last_seen,) = [seq for seq, _ in queue.deletions_after(db, 0)]
    queue.delete_job(db, second)
    # The stale entry is kept while it is the newest, so the next one still counts upwards.
    assert queue.deletions_after(db, last_seen) == [(last_seen + 1, second)]
    with db.write() as session:
        for entry in session.scalars(select(ModelDeletion)):
            entry.deleted_at = utcnow() - DELETION_LOG_KEEP - timedelta(seconds=1)
    third = trained(client, settings, db)
    queue.delete_job(db, third)
    assert [model for _, model in queue.deletions_after(db, 0)] == [second, third]
