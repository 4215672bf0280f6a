"""Models, scalers and loss histories survive a restart of the whole service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ServiceProcess, wait_for_job

pytestmark = pytest.mark.e2e


PROBE = {"inputs": [[0.5, -1.0], [2.0, 2.0], [-2.5, 0.1]]}


def everything_about(api: httpx.Client, job_id: str) -> list[Any]:
    """Predictions, model, loss history and job, as a client sees them."""
    return [
        api.post(f"/models/{job_id}/predict", json=PROBE).json(),
        api.get(f"/models/{job_id}").json(),
        api.get(f"/models/{job_id}/loss").json(),
        api.get(f"/jobs/{job_id}").json(),
    ]


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'service.db'}"
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(300, 2))
    y = np.sin(x[:, :1]) * 10 + x[:, 1:]

    first = ServiceProcess(database_url, log_path=tmp_path / "first.log").start()
    try:
        with httpx.Client(base_url=first.url, timeout=30) as api:
            job_id = api.post(
                "/jobs",
                json={
                    "data": {"x": x.tolist(), "y": y.tolist()},
                    "model": {"hidden_layers": [32, 16], "output_activation": None},
                    "training": {"epochs": 30, "batch_size": 50, "validation_fraction": 0.2},
                    "preprocessing": {"targets": "standard"},
                },
            ).json()["id"]
            assert wait_for_job(api, job_id)["status"] == "succeeded", first.log_tail()
            before = everything_about(api, job_id)
    finally:
        assert first.stop() == 0, first.log_tail()

    second = ServiceProcess(database_url, log_path=tmp_path / "second.log").start()
    try:
        with httpx.Client(base_url=second.url, timeout=30) as api:
            after = everything_about(api, job_id)
    finally:
        assert second.stop() == 0, second.log_tail()
    assert after == before
    assert len(before[2]["epochs"]) == 30 and before[2]["val_loss"] is not None
