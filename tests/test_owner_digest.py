"""Owner digests are keyed by a server secret: where the secret comes from, and how jobs stored
under the old unkeyed digest are moved to the new one at start-up."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.api.app import create_asgi_app
from service.api.auth import KeyRing, legacy_owner_digest, owner_digest
from service.config import Settings
from service.owner_secret import UnusableSecret, load_owner_secret, secret_path
from service.storage.db import Database
from service.storage.migrate import rekey_legacy_owners
from service.storage.models import Job
from tests.support import ServiceProcess

ALICE, BOB, DEPARTED = "alice-secret-key-1", "bob-secret-key-2", "departed-key-9"
JOB = {
    "data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]},
    "training": {"epochs": 2},
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keyed(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={"api_keys": f"{ALICE},{BOB}", "data_dir": str(tmp_path / "data")}
    )


def test_the_generated_secret_is_private_and_reused(keyed: Settings) -> None:
    first = load_owner_secret(keyed)
    path = secret_path(keyed)
    assert len(first) == 64 and int(first, 16) >= 0
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert load_owner_secret(keyed) == first
    assert [p.name for p in path.parent.iterdir()] == ["owner_secret"]  # no temporary left


def test_processes_starting_at_once_agree_on_one_secret(keyed: Settings) -> None:
    start = threading.Barrier(16)
    seen: list[bytes] = []

    def load() -> None:
        start.wait()
        seen.append(load_owner_secret(keyed))

    threads = [threading.Thread(target=load) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 16 and len(set(seen)) == 1
    assert secret_path(keyed).read_bytes().strip() == seen[0]


def test_an_empty_secret_file_stops_the_start_rather_than_orphan_every_job(
    keyed: Settings,
) -> None:
    secret_path(keyed).parent.mkdir()
    secret_path(keyed).write_text("\n")
    with pytest.raises(UnusableSecret):
        load_owner_secret(keyed)


def test_the_file_s_content_as_service_owner_secret_gives_the_same_digests(
    keyed: Settings,
) -> None:
    from_file = KeyRing.from_settings(keyed).authenticate(f"Bearer {ALICE}")
    copied = keyed.model_copy(
        update={"owner_secret": secret_path(keyed).read_text().strip(), "data_dir": "/nonexistent"}
    )
    assert KeyRing.from_settings(copied).authenticate(f"Bearer {ALICE}") == from_file


def store_legacy_jobs(settings: Settings, db: Database, owners: dict[str, str]) -> dict[str, str]:
    """Jobs as an older version stored them: {job id: key}, owner = the key's unkeyed digest."""
    jobs = {}
    with TestClient(create_asgi_app(settings)) as client:
        for name, key in owners.items():
            response = client.post("/jobs", json={**JOB, "name": name}, headers=bearer(ALICE))
            assert response.status_code == 202, response.text
            jobs[response.json()["id"]] = key
    with db.write() as session:
        for job_id, key in jobs.items():
            session.execute(
                update(Job).where(Job.id == job_id).values(owner=legacy_owner_digest(key))
            )
    return jobs


def owners(db: Database) -> dict[str, str]:
    with db.read() as session:
        return {job_id: owner for job_id, owner in session.execute(select(Job.id, Job.owner))}


def test_legacy_jobs_of_configured_keys_are_rekeyed_once_and_others_left(
    keyed: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = store_legacy_jobs(keyed, db, {"a1": ALICE, "a2": ALICE, "b": BOB, "gone": DEPARTED})
    caplog.set_level("INFO")
    assert rekey_legacy_owners(keyed) == 3
    assert "re-keyed 3 job(s)" in caplog.text
    secret = load_owner_secret(keyed)
    assert owners(db) == {
        job_id: owner_digest(secret, key) if key != DEPARTED else legacy_owner_digest(key)
        for job_id, key in jobs.items()
    }
    assert rekey_legacy_owners(keyed) == 0  # idempotent
    with TestClient(create_asgi_app(keyed)) as client:
        assert client.get("/jobs", headers=bearer(ALICE)).json()["total"] == 2
        assert client.get("/jobs", headers=bearer(BOB)).json()["total"] == 1


def test_a_legacy_job_whose_idempotency_key_was_reused_stays_as_it_is(
    keyed: Settings, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_asgi_app(keyed)) as client:
        replayed = {"Idempotency-Key": "nightly", **bearer(ALICE)}
        old = client.post("/jobs", json=JOB, headers=replayed).json()["id"]
        with db.write() as session:
            session.execute(
                update(Job).where(Job.id == old).values(owner=legacy_owner_digest(ALICE))
            )
        new = client.post("/jobs", json=JOB, headers=replayed).json()["id"]
    assert new != old
    caplog.set_level("WARNING")
    assert rekey_legacy_owners(keyed) == 0  # moving it would break the unique index
    assert "1 job(s) keep the legacy owner digest" in caplog.text
    assert owners(db)[old] == legacy_owner_digest(ALICE)


def test_serve_rekeys_a_legacy_database_and_owners_still_see_their_jobs(
    keyed: Settings, db: Database, tmp_path: Path
) -> None:
    jobs = store_legacy_jobs(keyed, db, {"a": ALICE, "b": BOB})
    db.dispose()
    server = ServiceProcess(
        keyed.database_url,
        workers=0,
        log_path=tmp_path / "serve.log",
        env={"SERVICE_API_KEYS": f"{ALICE},{BOB}", "SERVICE_DATA_DIR": keyed.data_dir},
    ).start()
    try:
        for key in (ALICE, BOB):
            listed = httpx.get(f"{server.url}/jobs", headers=bearer(key)).json()
            assert [job["id"] for job in listed["jobs"]] == [
                job_id for job_id, owner in jobs.items() if owner == key
            ]
        assert "re-keyed 2 job(s)" in server.log_tail(200)
    finally:
        assert server.stop() == 0, server.log_tail()
    secret = load_owner_secret(keyed)
    assert set(owners(db).values()) == {owner_digest(secret, key) for key in (ALICE, BOB)}
