"""API keys: bearer auth on everything but health, each key sees only its own jobs."""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.api.app import create_asgi_app
from service.api.auth import KeyRing
from service.config import Settings
from service.serve import bind_address
from service.storage.db import Database
from service.storage.models import Job
from service.training.worker import Worker

ALICE, BOB, ADMIN = "alice-secret-key-1", "bob-secret-key-2", "admin-secret-key-3"
JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 2, "batch_size": 2},
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(settings: Settings, db: Database, tmp_path: Path) -> Iterator[TestClient]:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{BOB}\n\n")
    keyed_settings = settings.model_copy(
        update={
            "api_keys": ALICE,
            "api_keys_file": str(keys_file),
            "admin_keys": ADMIN,
            "data_dir": str(tmp_path / "data"),  # the owner secret is generated here
        }
    )
    with TestClient(create_asgi_app(keyed_settings)) as client:
        yield client


def trained_job(client: TestClient, settings: Settings, db: Database, key: str) -> str:
    job_id: str = client.post("/jobs", json=JOB, headers=bearer(key)).json()["id"]
    assert Worker(settings, db).run_once()
    return job_id


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong"), {"Authorization": ALICE}, {"Authorization": "Basic abc"}, bearer("")],
)
def test_missing_or_wrong_tokens_get_401(keyed: TestClient, headers: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/models"),
        ("GET", "/jobs/x"),
        ("POST", "/models/x/predict"),
        ("POST", "/models/x/invocations"),
        ("GET", "/models/x/export"),
        ("GET", "/v2/models/x"),
        ("POST", "/v2/models/x/infer"),
    ]:
        response = keyed.request(method, path, headers=headers, json=JOB)
        assert response.status_code == 401, (method, path)
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_health_needs_no_token(keyed: TestClient) -> None:
    # Probes (Kubernetes, KServe) carry no keys.
    for path in ("/healthz", "/v2/health/live", "/v2/health/ready", "/v2"):
        assert keyed.get(path).status_code == 200, path


def test_another_key_s_model_is_unknown_to_every_protocol(
    keyed: TestClient, settings: Settings, db: Database
) -> None:
    job_id = trained_job(keyed, settings, db, ALICE)
    tensor = {"name": "inputs", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}
    for key, status in ((ALICE, 200), (BOB, 404), (ADMIN, 200)):
        v2 = keyed.post(
            f"/v2/models/{job_id}/infer", json={"inputs": [tensor]}, headers=bearer(key)
        )
        mlflow = keyed.post(
            f"/models/{job_id}/invocations", json={"inputs": [[1.0]]}, headers=bearer(key)
        )
        exported = keyed.get(f"/models/{job_id}/export", headers=bearer(key))
        assert (v2.status_code, mlflow.status_code, exported.status_code) == (status,) * 3, key
    assert keyed.get(f"/v2/models/{job_id}/ready", headers=bearer(BOB)).json() == {
        "error": f"no job or model with id {job_id}",
        "detail": f"no job or model with id {job_id}",
    }


def test_each_key_sees_only_its_own_jobs_and_models(
    keyed: TestClient, settings: Settings, db: Database
) -> None:
    job_id = trained_job(keyed, settings, db, ALICE)
    predict = {"inputs": [[1.5]]}
    assert (
        keyed.post(f"/models/{job_id}/predict", json=predict, headers=bearer(ALICE)).status_code
        == 200
    )
    for method, path, body in [
        ("GET", f"/jobs/{job_id}", None),
        ("GET", f"/models/{job_id}", None),
        ("GET", f"/models/{job_id}/loss", None),
        ("POST", f"/models/{job_id}/predict", predict),
        ("POST", f"/jobs/{job_id}/cancel", None),
        ("DELETE", f"/models/{job_id}", None),
    ]:
        response = keyed.request(method, path, json=body, headers=bearer(BOB))
        assert response.status_code == 404, (method, path)  # not 403: ids do not leak
    assert keyed.get("/jobs", headers=bearer(BOB)).json()["total"] == 0
    assert keyed.get("/models", headers=bearer(BOB)).json()["total"] == 0
    assert keyed.get("/jobs", headers=bearer(ALICE)).json()["total"] == 1
    # The model is still there for its owner after Bob's attempts.
    assert keyed.get(f"/models/{job_id}", headers=bearer(ALICE)).status_code == 200


def test_a_not_yet_trained_job_of_another_key_is_404_not_409(keyed: TestClient) -> None:
    job_id = keyed.post("/jobs", json=JOB, headers=bearer(ALICE)).json()["id"]
    assert (
        keyed.post(
            f"/models/{job_id}/predict", json={"inputs": [[1.0]]}, headers=bearer(ALICE)
        ).status_code
        == 409
    )
    assert (
        keyed.post(
            f"/models/{job_id}/predict", json={"inputs": [[1.0]]}, headers=bearer(BOB)
        ).status_code
        == 404
    )


def test_admin_keys_see_everything(keyed: TestClient, settings: Settings, db: Database) -> None:
    alice_job = trained_job(keyed, settings, db, ALICE)
    bob_job = keyed.post("/jobs", json=JOB, headers=bearer(BOB)).json()["id"]
    listed = {j["id"] for j in keyed.get("/jobs", headers=bearer(ADMIN)).json()["jobs"]}
    assert listed == {alice_job, bob_job}
    assert (
        keyed.post(
            f"/models/{alice_job}/predict", json={"inputs": [[0.5]]}, headers=bearer(ADMIN)
        ).status_code
        == 200
    )
    assert keyed.post(f"/jobs/{bob_job}/cancel", headers=bearer(ADMIN)).status_code == 200


def test_tokens_never_reach_the_logs(keyed: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    keyed.get("/jobs", headers=bearer(ALICE))
    keyed.get("/jobs", headers=bearer("a-wrong-key-xyz"))
    keyed.post("/jobs", json={"bad": 1}, headers=bearer(ALICE))
    assert ALICE not in caplog.text and "a-wrong-key-xyz" not in caplog.text


def test_without_keys_the_api_binds_to_loopback_only(
    settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    assert bind_address(settings.model_copy(update={"host": "0.0.0.0"})) == "127.0.0.1"
    assert "unauthenticated" in caplog.text
    keyed = settings.model_copy(
        update={"host": "0.0.0.0", "api_keys": ALICE, "data_dir": str(tmp_path)}
    )
    assert bind_address(keyed) == "0.0.0.0"


def test_a_job_s_owner_is_an_hmac_of_its_key_under_the_server_secret(
    keyed: TestClient, db: Database, tmp_path: Path
) -> None:
    job_id = keyed.post("/jobs", json=JOB, headers=bearer(ALICE)).json()["id"]
    with db.read() as session:
        owner = session.scalars(select(Job.owner).where(Job.id == job_id)).one()
    secret = (tmp_path / "data" / "owner_secret").read_bytes().strip()
    assert owner == hmac.new(secret, ALICE.encode(), hashlib.sha256).hexdigest()
    assert len(owner) == 64
    assert owner != hashlib.sha256(ALICE.encode()).hexdigest()[:32]  # the old, guessable one


def test_the_same_key_has_another_owner_digest_under_another_secret() -> None:
    first = KeyRing([ALICE], [], b"one secret").authenticate(f"Bearer {ALICE}")
    second = KeyRing([ALICE], [], b"another secret").authenticate(f"Bearer {ALICE}")
    assert first.owner != second.owner
    assert hashlib.sha256(ALICE.encode()).hexdigest()[:32] not in (first.owner, second.owner)


def test_without_keys_no_secret_is_read_or_written(settings: Settings, tmp_path: Path) -> None:
    quiet = settings.model_copy(update={"data_dir": str(tmp_path / "data")})
    assert not KeyRing.from_settings(quiet).enabled
    assert not (tmp_path / "data").exists()


def test_each_key_sees_and_acts_on_its_own_sweeps_only(keyed: TestClient) -> None:
    body = {"base": JOB, "grid": {"training.seed": [0, 1]}}
    assert keyed.post("/sweeps", json=body).status_code == 401
    sweep = keyed.post("/sweeps", json=body, headers=bearer(ALICE)).json()
    path = f"/sweeps/{sweep['id']}"
    for method, url in (("GET", path), ("POST", f"{path}/cancel"), ("DELETE", path)):
        assert keyed.request(method, url, headers=bearer(BOB)).status_code == 404
    assert keyed.get("/sweeps", headers=bearer(BOB)).json()["total"] == 0
    assert keyed.get("/sweeps", headers=bearer(ADMIN)).json()["total"] == 1
    trial = sweep["trials"][0]["id"]
    assert keyed.get(f"/jobs/{trial}", headers=bearer(BOB)).status_code == 404
    assert keyed.get(f"/jobs/{trial}", headers=bearer(ALICE)).status_code == 200
    assert keyed.post(f"{path}/cancel", headers=bearer(ALICE)).json()["status"] == "cancelled"
