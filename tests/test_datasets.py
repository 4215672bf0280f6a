"""Datasets as resources: upload a CSV, .npz or JSON once, train many jobs from it.

In-process (the app on a fresh SQLite file; the worker's loop run in the test where a job must
train). tests/e2e/test_datasets.py drives a real `serve` process."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.api.app import create_asgi_app
from service.config import Settings
from service.datasets import records
from service.datasets.csv_upload import read_csv
from service.datasets.limits import UploadLimits
from service.datasets.training_data import load_job_dataset, training_dataset
from service.errors import Conflict, NotFound
from service.quota import Quota
from service.schemas import JobCreate
from service.storage import queue
from service.storage.blobs import IN_DATABASE, open_blob_store
from service.storage.db import Database
from service.storage.models import DatasetRecord, Job
from service.submission import build_job
from service.training.worker import Worker
from tests.databases import BACKENDS, migrated_database

CSV = {"Content-Type": "text/csv"}
NPZ = {"Content-Type": "application/x-npz"}
SMALL_CSV = "a,b,y\n1,2,3\n4,5,6.5\n7,8,9\n0,1,2\n"
LABELS_CSV = "length,width,species\n1.0,0.5,cat\n1.2,0.4,dog\n0.9,0.6,cat\n1.4,0.3,dog\n"
TINY_TRAINING = {"epochs": 2, "batch_size": 2}


def upload(
    client: TestClient, body: str | bytes, target: str = "y", **params: str
) -> httpx.Response:
    return client.post("/datasets", params={"target": target, **params}, content=body, headers=CSV)


def uploaded(client: TestClient, body: str | bytes, target: str = "y") -> dict[str, Any]:
    response = upload(client, body, target)
    assert response.status_code == 201, response.text
    dataset: dict[str, Any] = response.json()
    return dataset


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def refused(response: httpx.Response, status: int = 422) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"}
    detail: str = body["detail"]
    return detail


def count_datasets(db: Database) -> int:
    with db.read() as session:
        return len(session.scalars(select(DatasetRecord.id)).all())


# -- uploads -------------------------------------------------------------------------------


def test_a_csv_upload_is_summarised_and_readable_back(client: TestClient) -> None:
    response = upload(client, SMALL_CSV, name="tiny")
    assert response.status_code == 201
    dataset = response.json()
    assert response.headers["location"] == f"/datasets/{dataset['id']}"
    assert dataset["name"] == "tiny"
    assert (dataset["n_rows"], dataset["n_columns"]) == (4, 3)
    assert (dataset["target"], dataset["feature_names"]) == ("y", ["a", "b"])
    assert dataset["size_bytes"] > 4 * 3 * 8  # float64 columns and a small header
    a, b, y = dataset["columns"]
    assert a == {
        "name": "a",
        "role": "feature",
        "kind": "number",
        "min": 0.0,
        "max": 7.0,
        "mean": 3.0,
        "std": pytest.approx(float(np.std([1, 4, 7, 0]))),
        "missing": 0,
    }
    assert (b["role"], y["role"], y["kind"]) == ("feature", "target", "number")
    assert (y["min"], y["max"], y["mean"]) == (2.0, 9.0, pytest.approx(5.125))
    assert client.get(f"/datasets/{dataset['id']}").json() == dataset


def test_spaces_around_names_and_a_byte_order_mark_are_layout(client: TestClient) -> None:
    dataset = uploaded(client, "\ufeffa , b , y\n1, 2, 3\n4, 5, 6\n".encode())
    assert dataset["feature_names"] == ["a", "b"]


def test_a_text_target_becomes_labels(client: TestClient) -> None:
    dataset = uploaded(client, LABELS_CSV, target="species")
    assert dataset["feature_names"] == ["length", "width"]
    assert dataset["columns"][-1] == {
        "name": "species",
        "role": "target",
        "kind": "label",
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "missing": 0,
    }


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("a,b,y\n1,2,3\n4,5\n", "line 3 has 2 fields where the header names 3 columns"),
        ("a,b,y\n1,2,3\n4,5,6,7\n", "line 3 has 4 fields where the header names 3 columns"),
        ("a,b,y\n1,2,3\n4,x,6\n", "line 3, column 'b': 'x' is not a number"),
        ("a,b,c\n1,2,3\n", "no column 'y' to use as the target; its columns are 'a', 'b', 'c'"),
        ("", "the file is empty"),
        ("a,b,y\n", "the CSV has a header but no rows"),
        ("a,b,y\n1,2,3\n4,,6\n", "line 3, column 'b': the cell is empty or marks a missing"),
        ("a,b,y\n1,NA,3\n", "line 2, column 'b': the cell is empty or marks a missing"),
        ("a,b,y\n1,2,3\n4,5,\n", "line 3, column 'y': the cell is empty or marks a missing"),
        ("a,b,y\n1,inf,3\n", "line 2, column 'b': inf is not a finite number"),
        ("a,b,y\n1,1e39,3\n", "line 2, column 'b': 1e+39 lies beyond ±3.4e+38 (float32)"),
        ("a,a,y\n1,2,3\n", "the header names column 'a' more than once"),
        ("a,,y\n1,2,3\n", "column 2 of the header has no name"),
        ("y\n1\n2\n", "a dataset needs at least one feature column"),
        ("a,y\n1,cat\n2, \n", "line 3, column 'y': the label is empty"),
    ],
)
def test_a_bad_csv_is_refused_naming_where(client: TestClient, csv: str, expected: str) -> None:
    assert expected in refused(upload(client, csv))


def test_a_csv_needs_its_target_named(client: TestClient) -> None:
    response = client.post("/datasets", content=SMALL_CSV, headers=CSV)
    assert "POST /datasets?target=COLUMN" in refused(response)


def test_errors_deep_in_a_large_csv_name_their_line(client: TestClient) -> None:
    """Past the reader's first blocks, lines are still counted from the header."""
    rows = [f"{i},{i % 7},{i % 3}" for i in range(120_000)]
    rows[99_998] = "5,oops,1"  # line 100,000: the header is line 1
    detail = refused(upload(client, "a,b,y\n" + "\n".join(rows) + "\n"))
    assert detail.startswith("line 100000, column 'b': 'oops' is not a number")


def test_a_target_with_text_below_the_first_block_is_read_as_labels(client: TestClient) -> None:
    rows = [f"{i},{i % 2}" for i in range(120_000)] + ["7,maybe"]
    dataset = uploaded(client, "a,y\n" + "\n".join(rows) + "\n")
    assert dataset["columns"][-1]["kind"] == "label"
    job = client.post("/jobs", json={"task": "classification", "dataset_id": dataset["id"]})
    assert job.status_code == 202, job.text


def test_a_numeric_column_with_a_stray_word_says_where_it_is(client: TestClient) -> None:
    rows = [f"{i},{i * 0.5}" for i in range(20_000)] + ["1,n/a?"]
    detail = refused(upload(client, "a,y\n" + "\n".join(rows) + "\n"))
    assert "20001 distinct labels, above the limit of 10000 classes" in detail
    assert "it is not numeric: line 20002, column 'y' holds 'n/a?'" in detail


def test_multipart_form_upload(client: TestClient) -> None:
    response = client.post(
        "/datasets",
        files={"file": ("flowers.csv", LABELS_CSV.encode(), "text/csv")},
        data={"target": "species", "name": "flowers"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["name"], response.json()["n_rows"]) == ("flowers", 4)
    without_file = client.post("/datasets", data={"target": "species"}, files={"x": ("a", b"")})
    assert "form field 'file'" in refused(without_file)


def test_npz_upload_with_feature_names(client: TestClient) -> None:
    x = np.arange(12.0).reshape(6, 2)
    body = npz(x=x, y=x.sum(axis=1), feature_names=np.array(["u", "v"]))
    response = client.post("/datasets", params={"target": "total"}, content=body, headers=NPZ)
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["feature_names"], dataset["target"]) == (["u", "v"], "total")
    octet = client.post(
        "/datasets",
        content=npz(x=x, y=np.array(list("abcabc"))),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert octet.status_code == 201
    assert octet.json()["feature_names"] == ["x0", "x1"]
    assert octet.json()["columns"][-1]["kind"] == "label"
    in_a_form = client.post("/datasets", files={"file": ("d.npz", body)})
    assert in_a_form.status_code == 201


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros((3, 2))}, "it lacks y"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(3), "w": np.zeros(3)}, "unknown: ['w']"),
        ({"x": np.zeros(3), "y": np.zeros(3)}, "x must be a non-empty 2-D array"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(4)}, "y must have one row per row of x (3)"),
        ({"x": np.zeros((3, 2), dtype=bool), "y": np.zeros(3)}, "x must hold numbers"),
        ({"x": np.array([[1.0, np.nan]] * 3), "y": np.zeros(3)}, "row 1, column 'x1': nan"),
    ],
)
def test_a_bad_npz_is_refused(client: TestClient, arrays: dict[str, Any], expected: str) -> None:
    assert expected in refused(client.post("/datasets", content=npz(**arrays), headers=NPZ))


def test_an_npz_with_objects_is_refused_without_unpickling(client: TestClient) -> None:
    objects = np.array([{"payload": 1}, None, 3], dtype=object)
    body = npz(x=np.zeros((3, 2)), y=objects)
    detail = refused(client.post("/datasets", content=body, headers=NPZ))
    assert "y holds Python objects" in detail
    assert "not an .npz" in refused(client.post("/datasets", content=b"junk", headers=NPZ))


def test_json_upload(client: TestClient) -> None:
    body = {"x": [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], "y": ["no", "yes", "yes"], "name": "j"}
    response = client.post("/datasets", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "j"
    assert response.json()["columns"][-1]["kind"] == "label"
    rows = client.post("/datasets", json={"x": [[0.0], [1.0]], "y": [[1.0, 2.0], [3.0, 4.0]]})
    assert [c["name"] for c in rows.json()["columns"]] == ["x0", "y0", "y1"]
    mixed = client.post("/datasets", json={"x": [[0.0], [1.0]], "y": ["a", 1]})
    assert "mixes labels and numbers" in refused(mixed)
    ragged = client.post("/datasets", json={"x": [[0.0], [1.0, 2.0]], "y": [1, 2]})
    assert refused(ragged).startswith("rows of x must all have one length")


def test_other_content_types_are_415(client: TestClient) -> None:
    response = client.post("/datasets", content=b"a=1", headers={"Content-Type": "text/plain"})
    assert "send the dataset as text/csv" in refused(response, 415)


# -- size limits ---------------------------------------------------------------------------


@pytest.fixture
def small_limits(settings: Settings, db: Database) -> Iterator[TestClient]:
    capped = settings.model_copy(update={"max_dataset_bytes": 64 * 1024, "max_body_bytes": 4096})
    with TestClient(create_asgi_app(capped)) as client:
        yield client


def test_uploads_have_their_own_size_limit(small_limits: TestClient, db: Database) -> None:
    """Larger than other bodies (a CSV of 10 kB passes the 4 kB body limit), and a 413 with
    the usual shape above it, declared or streamed; nothing is stored."""
    rows = "".join(f"{i},{i + 1},{i + 2}\n" for i in range(800))
    assert len(rows) > 4096
    assert upload(small_limits, "a,b,y\n" + rows).status_code == 201
    big = "a,b,y\n" + rows * 10
    assert "limit of 65536 bytes" in refused(upload(small_limits, big), 413)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096].encode()

    streamed = small_limits.post("/datasets?target=y", content=chunks(), headers=CSV)
    assert "limit of 65536 bytes" in refused(streamed, 413)
    assert count_datasets(db) == 1
    jobs_body = small_limits.post("/jobs", json={"data": {"x": [[0.0]] * 1000, "y": [0.0] * 1000}})
    assert jobs_body.status_code == 413  # other routes keep SERVICE_MAX_BODY_BYTES


def test_json_datasets_keep_the_json_body_limit(small_limits: TestClient) -> None:
    body = {"x": [[float(i)] for i in range(1000)], "y": [0.0] * 1000}
    detail = refused(small_limits.post("/datasets", json=body), 413)
    assert "upload larger data as CSV or .npz" in detail


def test_a_dataset_no_job_could_train_on_is_refused(settings: Settings, db: Database) -> None:
    capped = settings.model_copy(update={"max_rows": 3, "max_classes": 2})
    with TestClient(create_asgi_app(capped)) as client:
        assert "more than 3 rows" in refused(upload(client, SMALL_CSV))
        three_labels = "a,y\n1,x\n2,y\n3,z\n"
        assert "3 distinct labels, above the limit of 2" in refused(upload(client, three_labels))


# -- listing, ownership, deletion ------------------------------------------------------------


def test_listing_is_newest_first_and_paginated(client: TestClient) -> None:
    ids = [uploaded(client, SMALL_CSV)["id"] for _ in range(3)]
    listing = client.get("/datasets", params={"limit": 2}).json()
    assert (listing["total"], listing["limit"], listing["offset"]) == (3, 2, 0)
    assert [d["id"] for d in listing["datasets"]] == ids[::-1][:2]
    rest = client.get("/datasets", params={"limit": 2, "offset": 2}).json()
    assert [d["id"] for d in rest["datasets"]] == ids[:1]
    assert refused(client.get("/datasets/nope"), 404) == "no dataset with id nope"


ALICE, BOB = "alice-dataset-key", "bob-dataset-key"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_dataset_belongs_to_the_key_that_uploaded_it(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    keyed = settings.model_copy(update={"api_keys": f"{ALICE},{BOB}"})
    with TestClient(create_asgi_app(keyed)) as client:
        mine = client.post(
            "/datasets?target=y", content=SMALL_CSV, headers={**CSV, **bearer(ALICE)}
        )
        dataset_id = mine.json()["id"]
        assert client.get(f"/datasets/{dataset_id}", headers=bearer(BOB)).status_code == 404
        assert client.get("/datasets", headers=bearer(BOB)).json()["total"] == 0
        assert client.delete(f"/datasets/{dataset_id}", headers=bearer(BOB)).status_code == 404
        job = {"dataset_id": dataset_id, "training": TINY_TRAINING}
        theirs = client.post("/jobs", json=job, headers=bearer(BOB))
        assert f"no dataset with id {dataset_id}" in refused(theirs, 404)
        assert client.post("/jobs", json=job, headers=bearer(ALICE)).status_code == 202


def test_delete_is_refused_while_a_job_uses_the_dataset(client: TestClient, db: Database) -> None:
    dataset_id = uploaded(client, SMALL_CSV)["id"]
    job = client.post("/jobs", json={"dataset_id": dataset_id, "training": TINY_TRAINING}).json()
    detail = refused(client.delete(f"/datasets/{dataset_id}"), 409)
    assert f"in use by queued or running jobs ({job['id']})" in detail
    assert client.post(f"/jobs/{job['id']}/cancel").status_code == 200
    assert client.delete(f"/datasets/{dataset_id}").status_code == 204
    assert client.get(f"/datasets/{dataset_id}").status_code == 404
    assert client.get(f"/jobs/{job['id']}").json()["dataset_id"] is None  # the job stays
    assert count_datasets(db) == 0


def test_deleting_a_job_keeps_its_dataset(
    client: TestClient, settings: Settings, db: Database
) -> None:
    dataset_id = uploaded(client, SMALL_CSV)["id"]
    job = client.post("/jobs", json={"dataset_id": dataset_id, "training": TINY_TRAINING}).json()
    assert Worker(settings, db).run_once()
    assert client.delete(f"/models/{job['id']}").status_code == 204
    assert client.get(f"/datasets/{dataset_id}").status_code == 200


def test_datasets_count_towards_the_storage_quota(settings: Settings, db: Database) -> None:
    with TestClient(create_asgi_app(settings)) as client:
        size = uploaded(client, SMALL_CSV)["size_bytes"]
    capped = settings.model_copy(update={"max_stored_bytes_per_key": size + size // 2})
    with TestClient(create_asgi_app(capped)) as client:
        response = upload(client, SMALL_CSV)
        detail = refused(response, 429)
        assert f"this API key stores {size} bytes and this dataset adds {size}" in detail
        assert response.headers["retry-after"]
        inline = {"data": {"x": [[0.0]] * 50, "y": [0.0] * 50}, "training": TINY_TRAINING}
        assert client.post("/jobs", json=inline).status_code == 429  # jobs see it too
    assert count_datasets(db) == 1


# -- jobs from datasets --------------------------------------------------------------------


def test_a_job_trains_from_a_dataset_without_copying_it(
    client: TestClient, settings: Settings, db: Database
) -> None:
    dataset = uploaded(client, LABELS_CSV, target="species")
    response = client.post(
        "/jobs",
        json={"task": "classification", "dataset_id": dataset["id"], "training": TINY_TRAINING},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["dataset_id"], job["n_rows"], job["n_features"]) == (dataset["id"], 4, 2)
    with db.read() as session:
        stored = session.execute(
            select(Job.data, Job.data_ref, Job.stored_bytes).where(Job.id == job["id"])
        ).one()
    assert tuple(stored) == (b"", None, 0)
    training = load_job_dataset(db, IN_DATABASE, job["id"])
    assert training.classes == ["cat", "dog"]
    assert training.y.tolist() == [0, 1, 0, 1]
    assert training.feature_names == ["length", "width"]
    assert Worker(settings, db).run_once()
    model = client.get(f"/models/{job['id']}").json()
    assert (model["classes"], model["feature_names"]) == (["cat", "dog"], ["length", "width"])
    predicted = client.post(f"/models/{job['id']}/predict", json={"inputs": [[1.0, 0.5]]})
    assert predicted.json()["predictions"][0] in ("cat", "dog")
    inline = client.post("/jobs", json={"data": {"x": [[0.0], [1.0]], "y": [0.0, 1.0]}})
    assert inline.json()["dataset_id"] is None


def test_integer_targets_serve_regression_and_classification(
    client: TestClient, db: Database
) -> None:
    dataset_id = uploaded(client, "a,y\n0.1,3\n0.2,5\n0.3,3\n0.4,5\n")["id"]
    jobs = {
        task: client.post(
            "/jobs", json={"task": task, "dataset_id": dataset_id, "training": TINY_TRAINING}
        ).json()["id"]
        for task in ("regression", "classification")
    }
    regression = load_job_dataset(db, IN_DATABASE, jobs["regression"])
    assert (regression.classes, regression.y.tolist()) == (None, [[3.0], [5.0], [3.0], [5.0]])
    classification = load_job_dataset(db, IN_DATABASE, jobs["classification"])
    assert (classification.classes, classification.y.tolist()) == ([3, 5], [0, 1, 0, 1])


@pytest.mark.parametrize(
    ("csv", "target", "job", "expected"),
    [
        (LABELS_CSV, "species", {}, "regression needs a numeric target"),
        (SMALL_CSV, "y", {"task": "classification"}, "needs integer or text labels"),
        ("a,y\n1,cat\n2,cat\n", "y", {"task": "classification"}, "at least two distinct labels"),
        (SMALL_CSV, "y", {"training": {"validation_fraction": 0.1}}, "leaves no rows for valid"),
        (SMALL_CSV, "y", {"model": {"hidden_layers": [4096] * 6}}, "the trained weights"),
    ],
)
def test_a_job_is_checked_against_the_dataset_when_submitted(
    client: TestClient, csv: str, target: str, job: dict[str, Any], expected: str
) -> None:
    dataset_id = uploaded(client, csv, target)["id"]
    assert expected in refused(client.post("/jobs", json={**job, "dataset_id": dataset_id}))


def test_a_job_from_a_dataset_gets_the_inline_jobs_warnings(client: TestClient) -> None:
    dataset_id = uploaded(client, SMALL_CSV)["id"]
    job = client.post("/jobs", json={"dataset_id": dataset_id}).json()
    assert job["spec"]["training"]["batch_size"] == 4
    assert "batch_size 200 is larger than the 4 training rows; clipped to 4" in job["warnings"]
    assert any("some targets lie outside (-1, 1)" in w for w in job["warnings"])


@pytest.mark.parametrize(
    "body",
    [
        {"training": TINY_TRAINING},
        {"data": {"x": [[0.0], [1.0]], "y": [0.0, 1.0]}, "dataset_id": "some-id"},
    ],
)
def test_a_job_names_exactly_one_source_of_data(client: TestClient, body: dict[str, Any]) -> None:
    assert "exactly one of the two" in refused(client.post("/jobs", json=body))


def test_an_unknown_dataset_id_is_404(client: TestClient) -> None:
    response = client.post("/jobs", json={"dataset_id": "no-such-dataset"})
    assert "no dataset with id no-such-dataset" in refused(response, 404)


# -- where the bytes live --------------------------------------------------------------------


def test_with_a_blob_store_the_data_is_a_file(
    settings: Settings, db: Database, tmp_path: Path
) -> None:
    store = tmp_path / "blobs"
    store.mkdir(mode=0o700)
    with_store = settings.model_copy(update={"blob_store_url": store.as_uri()})
    with TestClient(create_asgi_app(with_store)) as client:
        dataset = uploaded(client, SMALL_CSV)
        path = store / "datasets" / dataset["id"] / "data.safetensors"
        assert path.stat().st_size == dataset["size_bytes"]
        with db.read() as session:
            record = session.get(DatasetRecord, dataset["id"])
            assert record is not None
            assert (record.data, record.data_ref) == (
                b"",
                f"datasets/{dataset['id']}/data.safetensors",
            )
        job_id = client.post("/jobs", json={"dataset_id": dataset["id"]}).json()["id"]
        training = load_job_dataset(db, open_blob_store(with_store.blob_store_url), job_id)
        assert training.x.tolist() == [[1, 2], [4, 5], [7, 8], [0, 1]]
        client.post(f"/jobs/{job_id}/cancel")
        assert client.delete(f"/datasets/{dataset['id']}").status_code == 204
        assert not path.exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stored_bytes_read_back_on_each_database(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """SQLite streams the file into its row; PostgreSQL stores it as one value."""
    settings = Settings(database_url=database_url)
    built = read_csv(
        io.BytesIO(LABELS_CSV.encode()), "species", UploadLimits.from_settings(settings), tmp_path
    )
    with migrated_database(backend, database_url) as db:
        record = records.store(db, IN_DATABASE, built, "owner", None, Quota.from_settings(settings))
        with db.read() as session:
            blob = session.scalar(select(DatasetRecord.data).where(DatasetRecord.id == record.id))
        assert blob == built.path.read_bytes()
        dataset = training_dataset(blob, record.id, classification=True)
        assert (dataset.classes, dataset.y.tolist()) == (["cat", "dog"], [0, 1, 0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_deleting_waits_for_active_jobs_then_clears_references(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url)
    built = read_csv(
        io.BytesIO(SMALL_CSV.encode()), "y", UploadLimits.from_settings(settings), tmp_path
    )
    with migrated_database(backend, database_url) as db:
        record = records.store(db, IN_DATABASE, built, "", None, Quota.from_settings(settings))
        request = JobCreate.model_validate({"dataset_id": record.id, "training": TINY_TRAINING})
        job, _ = queue.enqueue_once(db, build_job(request, settings, record))
        with pytest.raises(Conflict, match=f"in use by queued or running jobs \\({job.id}\\)"):
            records.remove(db, IN_DATABASE, record.id, owner=None)
        queue.request_cancel(db, job.id)
        records.remove(db, IN_DATABASE, record.id, owner=None)
        with db.read() as session:
            assert session.scalar(select(Job.dataset_id).where(Job.id == job.id)) is None
        with pytest.raises(NotFound):
            records.get(db, record.id, owner=None)
