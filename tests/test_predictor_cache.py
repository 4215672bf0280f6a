"""The API's predictor cache stays within SERVICE_MODEL_CACHE_SIZE and
SERVICE_MODEL_CACHE_BYTES, and a model it dropped is still served: reloaded from the database,
with the same answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.config import Settings
from service.inference import PredictorCache, load_predictor, predict
from service.storage.db import Database
from service.training.worker import Worker

LIMIT = 2
INPUTS = [[-1.0], [0.25], [2.0]]


def job(seed: int) -> dict[str, Any]:
    return {
        "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
        "model": {"hidden_layers": [4]},
        "training": {"epochs": 3, "batch_size": 2, "seed": seed},
    }


# Each test model's predictor holds this many bytes: 13 weights, twice, as float32.
MODEL_BYTES = 2 * 4 * 13
# The cache bounded by count, or by bytes to the same effect.
BOUNDS = {
    "by-count": {"model_cache_size": LIMIT},
    "by-bytes": {"model_cache_bytes": LIMIT * MODEL_BYTES},
}


@pytest.fixture(params=sorted(BOUNDS))
def small_cache(
    request: pytest.FixtureRequest, settings: Settings, db: Database
) -> Iterator[tuple[TestClient, PredictorCache]]:
    app = create_asgi_app(settings.model_copy(update=BOUNDS[request.param]))
    with TestClient(app) as client:
        predictors: PredictorCache = app.app.app.state.predictors  # type: ignore[attr-defined]
        yield client, predictors
        assert predictors.held_bytes <= LIMIT * MODEL_BYTES


@pytest.fixture
def model_ids(
    small_cache: tuple[TestClient, PredictorCache], settings: Settings, db: Database
) -> list[str]:
    """Twice as many trained models as the cache may hold."""
    client, _ = small_cache
    ids = []
    for seed in range(2 * LIMIT):
        response = client.post("/jobs", json=job(seed))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    worker = Worker(settings, db)
    while worker.run_once():
        pass
    assert all(client.get(f"/jobs/{i}").json()["status"] == "succeeded" for i in ids)
    return ids


def held(predictors: PredictorCache, ids: list[str]) -> set[str]:
    return {i for i in ids if predictors.cached(i) is not None}


def test_more_models_than_the_limit_are_all_served_and_the_cache_stays_within_it(
    small_cache: tuple[TestClient, PredictorCache], model_ids: list[str], db: Database
) -> None:
    client, predictors = small_cache
    expected = {i: predict(load_predictor(db, i), np.array(INPUTS)).values for i in model_ids}
    # Each model comes back after the others pushed it out, so every request but the first
    # few finds its model evicted and must reload it.
    for model_id in model_ids * 3:
        response = client.post(f"/models/{model_id}/predict", json={"inputs": INPUTS})
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(response.json()["predictions"], expected[model_id], rtol=1e-6)
        cached = held(predictors, model_ids)
        assert model_id in cached
        assert len(cached) <= LIMIT


def test_the_least_recently_used_model_is_the_one_dropped(
    small_cache: tuple[TestClient, PredictorCache], model_ids: list[str]
) -> None:
    client, predictors = small_cache
    first, second, third = model_ids[:3]
    for model_id in (first, second, first, third):
        response = client.post(f"/models/{model_id}/predict", json={"inputs": INPUTS})
        assert response.status_code == 200, response.text
    # `first` was used after `second`, so `second` made room for `third`.
    assert held(predictors, model_ids) == {first, third}
