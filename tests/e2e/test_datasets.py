"""Datasets through a real `serve` process: a CSV streamed up once, jobs trained from it by
reference, predictions by the CSV's column names, and a delete that waits for its jobs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support import ServiceProcess, sinc, submit_job, wait_for_job

pytestmark = pytest.mark.e2e

CSV = {"Content-Type": "text/csv"}


def sinc_csv(n_rows: int) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.uniform(-10.0, 10.0, size=(n_rows, 2))
    y = sinc(x[:, 0], x[:, 1])
    lines = [f"{a:.6f},{b:.6f},{t:.6f}" for (a, b), t in zip(x, y, strict=True)]
    return ("x1,x2,sinc\n" + "\n".join(lines) + "\n").encode()


def in_chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body of unknown length: sent chunked, as a client streaming a file it reads."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_streamed_csv_trains_jobs_that_predict_by_its_column_names(
    api: httpx.Client, service: ServiceProcess
) -> None:
    body = sinc_csv(20_000)
    dataset = created(
        api.post("/datasets?target=sinc&name=sinc", content=in_chunks(body), headers=CSV)
    )
    assert (dataset["n_rows"], dataset["feature_names"], dataset["target"]) == (
        20_000,
        ["x1", "x2"],
        "sinc",
    )
    assert dataset["size_bytes"] < len(body)  # float64 columns, smaller than their text
    jobs = [
        submit_job(
            api,
            {
                "dataset_id": dataset["id"],
                "model": {"hidden_layers": [16], "output_activation": None},
                "training": {"epochs": 3, "batch_size": 500, "seed": seed},
            },
        )
        for seed in (1, 2)
    ]
    for job_id in jobs:
        job = wait_for_job(api, job_id)
        assert job["status"] == "succeeded", (job, service.log_tail())
        assert job["dataset_id"] == dataset["id"]
        model = api.get(f"/models/{job_id}").json()
        assert model["feature_names"] == ["x1", "x2"]
        by_name = api.post(
            f"/models/{job_id}/invocations",
            json={"dataframe_split": {"columns": ["x2", "x1"], "data": [[1.0, 0.5]]}},
        )
        by_position = api.post(f"/models/{job_id}/predict", json={"inputs": [[0.5, 1.0]]})
        assert by_name.status_code == by_position.status_code == 200, by_name.text
        assert by_name.json()["predictions"][0] == pytest.approx(
            by_position.json()["predictions"][0][0]
        )
    assert api.get(f"/datasets/{dataset['id']}").status_code == 200  # still there for more


def test_a_label_csv_in_a_form_trains_a_classifier(
    api: httpx.Client, service: ServiceProcess
) -> None:
    rng = np.random.default_rng(1)
    rows = [
        f"{rng.normal(-2 if label == 'low' else 2):.4f},{label}" for label in ["low", "high"] * 100
    ]
    form_file = ("levels.csv", ("level,band\n" + "\n".join(rows) + "\n").encode(), "text/csv")
    dataset = created(api.post("/datasets", files={"file": form_file}, data={"target": "band"}))
    job_id = submit_job(
        api,
        {
            "task": "classification",
            "dataset_id": dataset["id"],
            "training": {"epochs": 20, "batch_size": 50},
        },
    )
    job = wait_for_job(api, job_id)
    assert job["status"] == "succeeded", (job, service.log_tail())
    predicted = api.post(f"/models/{job_id}/predict", json={"inputs": [[-3.0], [3.0]]}).json()
    assert predicted["predictions"] == ["low", "high"]


def test_a_dataset_in_use_cannot_be_deleted(api: httpx.Client, service: ServiceProcess) -> None:
    dataset = created(api.post("/datasets?target=sinc", content=sinc_csv(2_000), headers=CSV))
    long_job = submit_job(
        api, {"dataset_id": dataset["id"], "training": {"epochs": 100_000, "batch_size": 50}}
    )
    wait_for_job(api, long_job, statuses=("running",))
    refused = api.delete(f"/datasets/{dataset['id']}")
    assert refused.status_code == 409 and long_job in refused.json()["detail"]
    assert api.post(f"/jobs/{long_job}/cancel").status_code == 200
    wait_for_job(api, long_job)
    assert api.delete(f"/datasets/{dataset['id']}").status_code == 204
    assert api.get(f"/datasets/{dataset['id']}").status_code == 404
    assert api.get(f"/jobs/{long_job}").json()["status"] == "cancelled"
