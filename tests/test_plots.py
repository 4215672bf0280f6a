"""Loss and surface images, and long loss histories thinned to their shape."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from service.config import Settings
from service.storage.db import Database
from service.storage.models import LossRecord
from service.training.worker import Worker

PNG = b"\x89PNG\r\n\x1a\n"
ONE_INPUT = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 3, "batch_size": 2, "validation_fraction": 0.25},
}
TWO_INPUTS = {
    "data": {
        "x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]],
        "y": [[0.0], [0.3], [0.6], [0.9]],
    },
    "training": {"epochs": 3, "batch_size": 2},
}
CLASSES = {
    "task": "classification",
    "data": {"x": [[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 3.0]], "y": ["a", "b", "a", "b"]},
    "training": {"epochs": 3, "batch_size": 2},
}
THREE_INPUTS = {
    "data": {"x": [[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [2.0, 1.0, 0.0]], "y": [[0.0], [0.3], [0.6]]},
    "training": {"epochs": 2, "batch_size": 2},
}


def submit(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def trained(client: TestClient, settings: Settings, db: Database, body: dict[str, Any]) -> str:
    job_id = submit(client, body)
    assert Worker(settings, db).run_once()
    assert client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
    return job_id


def test_loss_plots_draw_the_history_while_the_job_runs_and_after(
    client: TestClient, settings: Settings, db: Database
) -> None:
    job_id = trained(client, settings, db, ONE_INPUT)
    queued = submit(client, ONE_INPUT)
    early = client.get(f"/models/{queued}/loss.png")
    assert early.status_code == 200 and early.headers["content-type"] == "image/png"
    assert early.content.startswith(PNG)

    png = client.get(f"/models/{job_id}/loss.png")
    assert png.status_code == 200 and png.content.startswith(PNG)
    svg = client.get(f"/models/{job_id}/loss.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content and b"validation" in svg.content


@pytest.mark.parametrize(
    "body", [ONE_INPUT, TWO_INPUTS, CLASSES], ids=["1-input", "2-inputs", "classes"]
)
def test_surface_plots_of_one_and_two_input_models(
    client: TestClient, settings: Settings, db: Database, body: dict[str, Any]
) -> None:
    job_id = trained(client, settings, db, body)
    image = client.get(f"/models/{job_id}/surface.png")
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png" and image.content.startswith(PNG)


def test_surface_plots_refuse_what_they_cannot_draw(
    client: TestClient, settings: Settings, db: Database
) -> None:
    wide = trained(client, settings, db, THREE_INPUTS)
    queued = submit(client, TWO_INPUTS)
    waiting = client.get(f"/models/{queued}/surface.png")
    assert waiting.status_code == 409 and waiting.json()["error"] == "model_not_ready"
    refused = client.get(f"/models/{wide}/surface.png")
    assert refused.status_code == 422 and "1 or 2 inputs" in refused.json()["detail"]
    for plot in ("loss.png", "loss.svg", "surface.png"):
        unknown = client.get(f"/models/no-such-model/{plot}")
        assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"


def test_without_matplotlib_plots_answer_501(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if missing
    job_id = submit(client, ONE_INPUT)
    response = client.get(f"/models/{job_id}/loss.png")
    assert response.status_code == 501
    assert response.json()["error"] == "not_implemented"
    assert "matplotlib" in response.json()["detail"]


def long_history(client: TestClient, db: Database, epochs: int, spike: int) -> str:
    job_id = submit(client, TWO_INPUTS)
    rows = [
        {
            "job_id": job_id,
            "epoch": e,
            "train_loss": 1.0 / e + (5.0 if e == spike else 0.0),
            "val_loss": 2.0 / e,
            "seconds": e * 0.01,
        }
        for e in range(1, epochs + 1)
    ]
    with db.write() as session:
        session.execute(insert(LossRecord), rows)
    return job_id


def test_max_points_thins_a_long_history_to_real_epochs_keeping_its_spikes(
    client: TestClient, db: Database
) -> None:
    job_id = long_history(client, db, 20_000, spike=12_345)
    loss = client.get(f"/models/{job_id}/loss", params={"max_points": 200}).json()
    epochs = loss["epochs"]
    assert 100 <= len(epochs) <= 200 and epochs == sorted(set(epochs))
    assert epochs[0] == 1 and epochs[-1] == 20_000
    assert 12_345 in epochs
    assert loss["next_from_epoch"] is None
    for epoch, train, val in zip(epochs, loss["train_loss"], loss["val_loss"], strict=True):
        assert train == pytest.approx(1.0 / epoch + (5.0 if epoch == 12_345 else 0.0))
        assert val == pytest.approx(2.0 / epoch)


def test_max_points_thins_the_page_that_from_epoch_and_limit_ask_for(
    client: TestClient, db: Database
) -> None:
    job_id = long_history(client, db, 5000, spike=2500)
    params = {"from_epoch": 2001, "limit": 1000, "max_points": 50}
    page = client.get(f"/models/{job_id}/loss", params=params).json()
    assert len(page["epochs"]) <= 50
    assert page["epochs"][0] == 2001 and page["epochs"][-1] == 3000
    assert 2500 in page["epochs"]
    assert page["next_from_epoch"] == 3001
    # A page already as short as max_points comes whole.
    short = client.get(f"/models/{job_id}/loss", params={"from_epoch": 4990, "max_points": 50})
    assert short.json()["epochs"] == list(range(4990, 5001))
    # Without max_points, pages are as before.
    plain = client.get(f"/models/{job_id}/loss", params={"limit": 10}).json()
    assert plain["epochs"] == list(range(1, 11)) and plain["next_from_epoch"] == 11
    assert client.get(f"/models/{job_id}/loss", params={"max_points": 1}).status_code == 422
