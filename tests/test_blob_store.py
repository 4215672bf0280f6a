"""Training data and model weights in the database or in a file blob store (SERVICE_BLOB_STORE_URL):
the file store itself (atomic writes, private files, keys that cannot leave the root, clear errors
for missing files), the rows that name its blobs (quota, retention, deletion, orphans), and a real
`serve` on SQLite and PostgreSQL with each setting."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from service import retention
from service.api.app import create_asgi_app
from service.config import Settings
from service.errors import QuotaExceeded
from service.quota import Quota
from service.schemas import JobCreate
from service.storage import blobs, queue
from service.storage.blobs import (
    IN_DATABASE,
    BadBlobStoreUrl,
    BlobStore,
    FileBlobStore,
    InvalidBlobKey,
    MissingBlob,
    open_blob_store,
)
from service.storage.db import Database
from service.storage.models import Job, Model, utcnow
from service.storage.store import decode_dataset
from service.submission import build_job
from service.training.worker import Worker
from tests.databases import BACKENDS, fresh_postgres_database, migrated_database
from tests.support import REPO, ServiceProcess, placeholder_model, wait_for_job

TINY: dict[str, Any] = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 3, "batch_size": 2},
}
STORES = ["database", "file"]
DAY = 24 * 3600.0


def file_store(tmp_path: Path) -> FileBlobStore:
    root = tmp_path / "blobs"
    root.mkdir(exist_ok=True)
    return FileBlobStore(root)


def temporary_files(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*") if path.is_file()]


# -- the file store ---------------------------------------------------------------------------


def test_a_blob_round_trips_under_its_key(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    store.put("jobs/j1/data.safetensors", b"training data")
    assert store.get("jobs/j1/data.safetensors") == b"training data"
    assert (store.root / "jobs" / "j1" / "data.safetensors").read_bytes() == b"training data"
    store.put("jobs/j1/data.safetensors", b"replaced")
    assert store.get("jobs/j1/data.safetensors") == b"replaced"
    assert temporary_files(store.root) == []


def test_a_reader_sees_a_rewritten_blob_whole_or_not_at_all(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    versions = [bytes([n]) * (4 * 1024 * 1024) for n in (1, 2)]
    store.put("models/m/weights-0000000000000000.safetensors", versions[0])
    done = threading.Event()

    def rewrite() -> None:
        for n in range(20):
            store.put("models/m/weights-0000000000000000.safetensors", versions[n % 2])
        done.set()

    writer = threading.Thread(target=rewrite)
    writer.start()
    reads = 0
    while not done.is_set() or reads == 0:
        assert store.get("models/m/weights-0000000000000000.safetensors") in versions
        reads += 1
    writer.join()
    assert temporary_files(store.root) == []


def test_a_write_that_fails_midway_keeps_the_old_blob_and_leaves_nothing(tmp_path: Path) -> None:
    """The file system refuses the write after 1 MiB (RLIMIT_FSIZE, in a child process)."""
    store = file_store(tmp_path)
    store.put("jobs/j1/data.safetensors", b"old")
    child = textwrap.dedent(
        f"""
        import resource, signal, sys
        from pathlib import Path
        from service.storage.blobs import BlobStoreUnavailable, FileBlobStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
        try:
            FileBlobStore(Path({str(store.root)!r})).put("jobs/j1/data.safetensors", b"n" * 2**22)
        except BlobStoreUnavailable as exc:
            print(exc)
            sys.exit(3)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stderr
    assert "could not store jobs/j1/data.safetensors" in result.stdout
    assert store.get("jobs/j1/data.safetensors") == b"old"
    assert temporary_files(store.root) == []


def test_a_writer_killed_midway_leaves_a_whole_blob_and_debris_the_sweep_removes(
    tmp_path: Path,
) -> None:
    store = file_store(tmp_path)
    store.put("jobs/j1/data.safetensors", b"0" * 1024)
    child = textwrap.dedent(
        f"""
        from pathlib import Path
        from service.storage.blobs import FileBlobStore
        store = FileBlobStore(Path({str(store.root)!r}))
        print("writing", flush=True)
        for n in range(1, 1000):
            store.put("jobs/j1/data.safetensors", str(n % 10).encode() * 2**24)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", child], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as writer:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        time.sleep(0.5)
        writer.send_signal(signal.SIGKILL)
    blob = store.get("jobs/j1/data.safetensors")
    assert blob == blob[:1] * len(blob) and len(blob) in (1024, 2**24)  # one whole version
    assert list(store.keys("jobs", time.time() + 1)) == ["jobs/j1/data.safetensors"]
    debris = temporary_files(store.root)
    assert store.drop_unfinished_writes("jobs", time.time() - 60) == 0  # too recent to judge
    assert store.drop_unfinished_writes("jobs", time.time() + 1) == len(debris)
    assert temporary_files(store.root) == []
    assert store.get("jobs/j1/data.safetensors") == blob


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "jobs/../../outside",
        "/etc/passwd",
        "jobs//data",
        "jobs/./data",
        ".hidden",
        "jobs/.data.0123.tmp",
        "jobs\\..\\outside",
        "",
        "jobs/" + "x" * 300,
        "jobs/\x00",
    ],
)
def test_a_key_that_could_leave_the_root_is_refused(tmp_path: Path, key: str) -> None:
    store = file_store(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(InvalidBlobKey):
        store.put(key, b"x")
    with pytest.raises(InvalidBlobKey):
        store.get(key)
    with pytest.raises(InvalidBlobKey):
        store.delete(key)
    assert sorted(tmp_path.rglob("*")) == before


def test_blobs_and_their_folders_are_private_whatever_the_umask(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    previous = os.umask(0)
    try:
        store.put("jobs/j1/data.safetensors", b"secret")
    finally:
        os.umask(previous)

    def mode(path: Path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(store.root / "jobs" / "j1" / "data.safetensors") == 0o600
    assert mode(store.root / "jobs" / "j1") == mode(store.root / "jobs") == 0o700


def test_a_missing_or_unreadable_blob_is_a_clear_error(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    with pytest.raises(MissingBlob, match=r"jobs/j1/data\.safetensors is missing") as missing:
        store.get("jobs/j1/data.safetensors")
    assert str(store.root) not in str(missing.value)  # the operator's paths stay private
    (store.root / "jobs" / "j2" / "data.safetensors").mkdir(parents=True)
    with pytest.raises(MissingBlob, match="cannot be read"):
        store.get("jobs/j2/data.safetensors")


def test_deleting_a_blob_takes_its_folder_and_is_safe_to_repeat(tmp_path: Path) -> None:
    store = file_store(tmp_path)
    store.put("models/m/weights-0000000000000001.safetensors", b"a")
    store.put("models/m/weights-0000000000000002.safetensors", b"b")
    store.delete("models/m/weights-0000000000000001.safetensors")
    assert (store.root / "models" / "m").is_dir()  # its sibling keeps the folder
    store.delete("models/m/weights-0000000000000002.safetensors")
    store.delete("models/m/weights-0000000000000002.safetensors")
    assert not (store.root / "models" / "m").exists()
    assert (store.root / "models").is_dir()


def test_the_setting_opens_the_database_or_a_folder(tmp_path: Path) -> None:
    assert open_blob_store("") is IN_DATABASE
    spaced = tmp_path / "blob store"
    spaced.mkdir()
    opened = open_blob_store(spaced.as_uri())
    assert opened.external == FileBlobStore(spaced)
    assert opened.url == spaced.as_uri()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("s3://bucket/blobs", "unknown scheme 's3'"),
        ("/srv/blobs", "unknown scheme '(none)'"),
        ("file://fileserver/blobs", "three slashes"),
        ("file:///srv/blobs?x=1", "no host, query or fragment"),
        ("file:blobs", "must be absolute"),
        ("file:///no/such/folder", "is not a folder; create it"),
    ],
)
def test_a_setting_that_cannot_work_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(BadBlobStoreUrl, match=re.escape(reason)):
        open_blob_store(url)


def test_a_row_naming_a_blob_store_key_is_unreadable_without_a_store() -> None:
    with pytest.raises(MissingBlob, match="SERVICE_BLOB_STORE_URL is empty"):
        IN_DATABASE.fetch("jobs/j1/data.safetensors", b"")
    assert IN_DATABASE.fetch(None, b"inline") == b"inline"


# -- the rows that name blobs, on SQLite and PostgreSQL, with each setting ---------------------


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


@pytest.fixture(params=STORES)
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return IN_DATABASE if request.param == "database" else BlobStore(file_store(tmp_path))


def root_of(blob_store: BlobStore) -> Path:
    assert isinstance(blob_store.external, FileBlobStore)
    return blob_store.external.root


def files_of(blob_store: BlobStore) -> list[str]:
    if blob_store.external is None:
        return []
    root = root_of(blob_store)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def queued_job(db: Database, blob_store: BlobStore, limits: Quota | None = None) -> Job:
    job = build_job(JobCreate.model_validate(TINY), Settings())
    job.owner = ""  # the anonymous owner, as the API sets it without keys
    stored, created = queue.enqueue_once(db, job, limits, blob_store)
    assert created
    return stored


def succeeded_job(db: Database, blob_store: BlobStore, weights: bytes = b"w" * 50) -> str:
    job = queued_job(db, blob_store)
    assert queue.claim(db, "w1", 30) == job.id
    model = placeholder_model(job.id)
    blobs.stow_weights(blob_store, model, weights)
    assert queue.finish_succeeded(db, job.id, "w1", model, [], None) == "succeeded"
    return job.id


def row_bytes(db: Database, job_id: str) -> tuple[int, int, int]:
    """The bytes the job's and its model's rows hold themselves, and the job's stored_bytes."""
    with db.read() as session:
        data, stored = session.execute(
            select(func.length(Job.data), Job.stored_bytes).where(Job.id == job_id)
        ).one()
        weights = session.scalar(select(func.length(Model.weights)).where(Model.id == job_id))
    return data, weights or 0, stored


def test_a_job_keeps_its_data_where_the_setting_says(
    any_db: Database, blob_store: BlobStore
) -> None:
    job = build_job(JobCreate.model_validate(TINY), Settings())
    encoded = job.data
    queue.enqueue_once(any_db, job, None, blob_store)
    assert decode_dataset(blobs.read_job_data(any_db, blob_store, job.id)).x.shape == (4, 1)
    assert blobs.read_job_data(any_db, blob_store, job.id) == encoded
    in_row, _, stored = row_bytes(any_db, job.id)
    assert stored == len(encoded)  # the quota counts it wherever it lives
    if blob_store.external is None:
        assert in_row == len(encoded) and files_of(blob_store) == []
    else:
        assert in_row == 0 and files_of(blob_store) == [f"jobs/{job.id}/data.safetensors"]


def test_the_storage_quota_counts_blobs_in_the_store_and_a_refusal_writes_nothing(
    any_db: Database, blob_store: BlobStore
) -> None:
    first = queued_job(any_db, blob_store)
    size = row_bytes(any_db, first.id)[2]
    limits = Quota(max_active_jobs=10, max_stored_bytes=size + size // 2)
    with pytest.raises(QuotaExceeded):
        queued_job(any_db, blob_store, limits)
    only_the_first = [] if blob_store.external is None else [blobs.job_data_key(first.id)]
    assert files_of(blob_store) == only_the_first


def test_a_model_counts_its_weights_wherever_they_are(
    any_db: Database, blob_store: BlobStore
) -> None:
    job_id = succeeded_job(any_db, blob_store, weights=b"w" * 50)
    data, weights, stored = row_bytes(any_db, job_id)
    data_size = len(build_job(JobCreate.model_validate(TINY), Settings()).data)
    assert stored == data_size + 50
    assert (data, weights) == ((data_size, 50) if blob_store.external is None else (0, 0))


def test_retention_drops_the_data_file_and_keeps_the_weights(
    any_db: Database, blob_store: BlobStore
) -> None:
    job_id = succeeded_job(any_db, blob_store)
    with any_db.write() as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(finished_at=utcnow() - timedelta(days=2))
        )
    assert retention.drop_expired_training_data(any_db, DAY, blob_store=blob_store) == 1
    assert row_bytes(any_db, job_id)[2] == 50  # only the model's weights remain counted
    assert [key.split("/")[0] for key in files_of(blob_store)] == (
        [] if blob_store.external is None else ["models"]
    )


def test_deleting_a_job_deletes_its_files(any_db: Database, blob_store: BlobStore) -> None:
    job_id = succeeded_job(any_db, blob_store)
    assert len(files_of(blob_store)) == (0 if blob_store.external is None else 2)
    queue.delete_job(any_db, job_id, blob_store=blob_store)
    assert files_of(blob_store) == []
    if blob_store.external is not None:
        root = root_of(blob_store)
        assert sorted(p.name for p in root.iterdir()) == ["jobs", "models"]
        assert [*(root / "jobs").iterdir(), *(root / "models").iterdir()] == []


def test_orphans_are_swept_once_past_the_grace_period_and_nothing_else(
    any_db: Database, tmp_path: Path
) -> None:
    blob_store = BlobStore(file_store(tmp_path))
    store = file_store(tmp_path)
    kept = succeeded_job(any_db, blob_store)
    store.put(blobs.job_data_key("00000000-dead-beef-0000-000000000000"), b"orphan")
    store.put("models/gone/weights-0123456789abcdef.safetensors", b"orphan")
    store.put("jobs/notes.txt", b"not ours")  # not a key this service writes: never touched
    (store.root / "README").write_text("the operator's")
    assert retention.sweep_orphan_blobs(any_db, blob_store) == 0  # all younger than the grace
    later = time.time() + 2 * retention.ORPHAN_GRACE_SECONDS
    assert retention.sweep_orphan_blobs(any_db, blob_store, now=later) == 2
    assert len(files_of(blob_store)) == 4  # the job's data and weights, notes.txt, README
    assert blobs.read_job_data(any_db, blob_store, kept)
    assert retention.sweep_orphan_blobs(any_db, IN_DATABASE, now=later) == 0


# -- through the worker and the API, in process -------------------------------------------------


@pytest.fixture
def file_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"blob_store_url": file_store(tmp_path).root.as_uri()})


def test_a_job_whose_data_file_is_gone_fails_saying_so(
    file_settings: Settings, db: Database
) -> None:
    blob_store = open_blob_store(file_settings.blob_store_url)
    job = queued_job(db, blob_store)
    assert blob_store.external is not None
    blob_store.external.delete(blobs.job_data_key(job.id))
    assert Worker(file_settings, db).run_once()
    with db.read() as session:
        status, error = session.execute(select(Job.status, Job.error).where(Job.id == job.id)).one()
    assert status == "failed" and error is not None
    assert f"jobs/{job.id}/data.safetensors is missing from the blob store" in error
    assert "training data" in error and file_settings.blob_store_url not in error


def test_a_model_whose_weights_file_is_gone_answers_409_not_500(
    file_settings: Settings, db: Database
) -> None:
    blob_store = open_blob_store(file_settings.blob_store_url)
    job = queued_job(db, blob_store)
    assert Worker(file_settings, db).run_once()
    (weights,) = [key for key in files_of(blob_store) if key.startswith("models/")]
    assert blob_store.external is not None
    blob_store.external.delete(weights)
    with TestClient(create_asgi_app(file_settings)) as client:
        answer = client.post(f"/models/{job.id}/predict", json={"inputs": [[1.0]]})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == "model_unusable"
    assert f"{weights} is missing from the blob store" in answer.json()["detail"]


def test_a_submit_the_blob_store_refuses_answers_503_and_stores_nothing(
    file_settings: Settings, db: Database, tmp_path: Path
) -> None:
    with TestClient(create_asgi_app(file_settings)) as client:
        shutil.rmtree(file_store(tmp_path).root)  # as if its mount went away
        answer = client.post("/jobs", json=TINY)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"] == "unavailable" and "Retry-After" in answer.headers
    assert "could not store jobs/" in answer.json()["detail"]
    with db.read() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


# -- a real serve, on SQLite and PostgreSQL, with each setting ---------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("store_kind", STORES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_serve_keeps_blobs_where_the_setting_says(
    backend: str, store_kind: str, tmp_path: Path, database_url: str
) -> None:
    root = file_store(tmp_path).root
    env = {"SERVICE_BLOB_STORE_URL": root.as_uri()} if store_kind == "file" else {}
    with nullcontext(database_url) if backend == "sqlite" else fresh_postgres_database() as url:
        service = ServiceProcess(url, log_path=tmp_path / "serve.log", env=env).start()
        db = Database(url)
        try:
            with httpx.Client(base_url=service.url, timeout=30) as api:
                submitted = api.post("/jobs", json=TINY)
                assert submitted.status_code == 202, submitted.text
                job_id = submitted.json()["id"]
                assert wait_for_job(api, job_id)["status"] == "succeeded", service.log_tail()
                predicted = api.post(f"/models/{job_id}/predict", json={"inputs": [[1.5]]})
                assert predicted.status_code == 200, predicted.text
                files = sorted(p for p in root.rglob("*") if p.is_file())
                data, weights, stored = row_bytes(db, job_id)
                if store_kind == "file":
                    data_file, weights_file = files
                    assert data_file == root / "jobs" / job_id / "data.safetensors"
                    assert weights_file.parent == root / "models" / job_id
                    assert weights_file.name.startswith("weights-")
                    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
                    assert (data, weights) == (0, 0)  # the rows hold no blob bytes
                    assert stored == sum(f.stat().st_size for f in files)
                else:
                    assert files == [] and data > 0 and weights > 0
                    assert stored == data + weights
                assert api.delete(f"/models/{job_id}").status_code == 204
            assert [p for p in root.rglob("*") if p.is_file()] == []
        finally:
            db.dispose()
            assert service.stop() == 0, service.log_tail()


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_blob_store_setting_that_cannot_work_stops_the_service_at_start(
    command: str, database_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "SERVICE_DATABASE_URL": database_url,
        "SERVICE_DATA_DIR": str(tmp_path / "data"),
        "SERVICE_BLOB_STORE_URL": "s3://bucket/blobs",
    }
    result = subprocess.run(
        [sys.executable, "-m", "service", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "unknown scheme 's3'" in result.stderr
    assert "Traceback" not in result.stderr
