"""Worker pools and the live worker list: `python -m service worker --concurrency N` runs N
worker processes under one supervisor, each listed by GET /workers with its pid, its last
heartbeat and the job it is training; the registry keeps the database's time, not the workers'.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import select

from service import fleet
from service.config import Settings
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Job
from service.worker_pool import worker_env
from tests.databases import BACKENDS, fresh_postgres_database, migrated_database
from tests.proc import alive, children, wait_for
from tests.support import FAST_QUEUE_ENV, REPO, ServiceProcess, sinc_job, submit_job

ADMIN_KEY = "pool-admin-key"
USER_KEY = "pool-user-key"
# Hours of training at the least: a job is still running whenever the test looks at it.
LONG_JOB = sinc_job(epochs=50_000)
SHORT_JOB: dict[str, Any] = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 6, "batch_size": 2},
}


# -- the registry keeps the database's time --


@pytest.mark.parametrize("skew", [timedelta(hours=-1), timedelta(hours=1)], ids=["behind", "ahead"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_whose_clock_is_an_hour_off_is_listed_with_the_databases_time(
    backend: str, skew: timedelta, tmp_path: Path
) -> None:
    with migrated_database(backend, f"sqlite:///{tmp_path / 'service.db'}") as db:
        # Only Python's clock travels; the database server keeps the true time.
        with time_machine.travel(datetime.now(UTC) + skew, tick=True):
            fleet.register(db, "skewed", "far-box", ["cpu"], "auto")
            assert fleet.renew(db, "skewed")
        (listed,) = fleet.live_workers(db, within_seconds=30)
        assert (listed.id, listed.pid) == ("skewed", os.getpid())
        for stamp in (listed.started_at, listed.last_seen_at):
            assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_whose_clock_runs_days_ahead_does_not_forget_the_live_fleet(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, f"sqlite:///{tmp_path / 'service.db'}") as db:
        fleet.register(db, "punctual", "here", ["cpu"], "auto")
        with time_machine.travel(datetime.now(UTC) + timedelta(days=3), tick=True):
            fleet.register(db, "from-the-future", "there", ["cpu"], "auto")
        live = [w.id for w in fleet.live_workers(db, within_seconds=30)]
        assert sorted(live) == ["from-the-future", "punctual"]


# -- GET /workers in-process: a worker's current job --


def test_a_worker_holding_a_lease_shows_its_job_and_an_idle_one_none(
    client: TestClient, db: Database
) -> None:
    fleet.register(db, "busy", "box", ["cpu"], "auto")
    fleet.register(db, "idle", "box", ["cpu"], "auto")
    job_id = submit_job(client, SHORT_JOB)
    assert queue.claim(db, "busy", 30) == job_id

    workers = {w["id"]: w for w in client.get("/workers").json()["workers"]}
    assert workers["idle"]["current_job"] is None
    current = workers["busy"]["current_job"]
    assert (current["id"], current["epoch"], current["epochs"]) == (job_id, 0, 6)
    assert current["started_at"] == client.get(f"/jobs/{job_id}").json()["started_at"]
    assert workers["busy"]["pid"] == os.getpid()

    assert queue.release(db, job_id, "busy")  # handed back: the worker is idle again
    busy = next(w for w in client.get("/workers").json()["workers"] if w["id"] == "busy")
    assert busy["current_job"] is None


# -- `worker --concurrency N` as real processes --


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    sqlite = f"sqlite:///{tmp_path / 'service.db'}"
    with nullcontext(sqlite) if backend == "sqlite" else fresh_postgres_database() as url:
        upgrade(url)
        yield url


@contextmanager
def api_server(url: str, tmp_path: Path) -> Iterator[ServiceProcess]:
    server = ServiceProcess(
        url,
        "api",
        log_path=tmp_path / "api.log",
        env={"SERVICE_API_KEYS": USER_KEY, "SERVICE_ADMIN_KEYS": ADMIN_KEY},
    ).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def worker_pool(
    url: str, data_dir: Path, concurrency: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m service worker --concurrency N`; SIGKILLed afterwards if still running (its
    workers die with it)."""
    env = {
        **os.environ,
        **FAST_QUEUE_ENV,
        "SERVICE_DATABASE_URL": url,
        "SERVICE_DATA_DIR": str(data_dir),
        "SERVICE_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "ab") as log:
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "service", "worker", "--concurrency", str(concurrency)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield supervisor
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Workers = list[dict[str, Any]]


def wait_for_workers(
    admin: httpx.Client, condition: Callable[[Workers], bool], what: str, log: Path
) -> Workers:
    deadline = time.monotonic() + 180  # workers import torch and warm up first: slow under load
    while True:
        workers: Workers = admin.get("/workers").raise_for_status().json()["workers"]
        if condition(workers):
            return workers
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}: {workers}\n" + (log.read_text(errors="replace")[-4000:])
        )
        time.sleep(0.1)


def lease_owners(url: str, job_ids: list[str]) -> dict[str, str | None]:
    db = Database(url)
    try:
        with db.read() as session:
            rows = session.execute(select(Job.id, Job.lease_owner).where(Job.id.in_(job_ids)))
            return {job_id: owner for job_id, owner in rows}
    finally:
        db.dispose()


@pytest.mark.e2e
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_pool_of_two_trains_two_jobs_at_once_and_stops_them_cleanly(
    backend: str, tmp_path: Path
) -> None:
    log = tmp_path / "pool.log"
    with (
        database_url(backend, tmp_path) as url,
        api_server(url, tmp_path) as server,
        worker_pool(url, server.data_dir, 2, log) as supervisor,
        httpx.Client(base_url=server.url, headers=bearer(ADMIN_KEY), timeout=30) as admin,
        httpx.Client(base_url=server.url, headers=bearer(USER_KEY), timeout=30) as user,
    ):
        workers = wait_for_workers(admin, lambda ws: len(ws) == 2, "two workers", log)
        pids = {w["pid"] for w in workers}
        assert pids == children(supervisor.pid) and len(pids) == 2
        for worker in workers:
            assert worker["hostname"] == socket.gethostname()
            assert worker["id"].startswith(f"{socket.gethostname()}:{worker['pid']}:")
            assert worker["devices"] == ["cpu"] and worker["current_job"] is None
        assert user.get("/workers").status_code == 403  # the jobs listed belong to everyone

        jobs = [submit_job(user, LONG_JOB) for _ in range(2)]
        busy = wait_for_workers(
            admin,
            lambda ws: len(ws) == 2 and all(w["current_job"] for w in ws),
            "both workers to train a job",
            log,
        )
        training = {w["current_job"]["id"]: w["id"] for w in busy}
        assert set(training) == set(jobs)  # one job each, at the same time
        owners = lease_owners(url, jobs)
        assert owners == training, "GET /workers must show the job whose lease each holds"

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=90) == 0, log.read_text(errors="replace")[-4000:]
        assert not any(alive(pid) for pid in pids)
        assert admin.get("/workers").json() == {"workers": []}
        for job_id in jobs:  # each worker handed its job back for the next one to resume
            job = admin.get(f"/jobs/{job_id}").json()
            assert (job["status"], job["attempts"]) == ("queued", 0), job


@pytest.mark.e2e
def test_a_killed_worker_is_replaced_and_all_die_with_the_supervisor(tmp_path: Path) -> None:
    log = tmp_path / "pool.log"
    with (
        database_url("sqlite", tmp_path) as url,
        api_server(url, tmp_path) as server,
        worker_pool(url, server.data_dir, 2, log) as supervisor,
        httpx.Client(base_url=server.url, headers=bearer(ADMIN_KEY), timeout=30) as admin,
    ):
        workers = wait_for_workers(admin, lambda ws: len(ws) == 2, "two workers", log)
        victim, survivor = (w["pid"] for w in workers)
        os.kill(victim, signal.SIGKILL)

        def replaced(ws: Workers) -> bool:
            # The killed worker's row ages out after a lease; its replacement registers.
            pids = {w["pid"] for w in ws}
            return len(pids) == 2 and victim not in pids and survivor in pids

        workers = wait_for_workers(admin, replaced, "a replacement worker", log)
        pids = {w["pid"] for w in workers}
        assert children(supervisor.pid) == pids
        assert f"worker pid {victim} exited with -9; restarting it" in log.read_text()

        # The replacement was forked after start-up, by the pool's monitor thread: it too must
        # die with a supervisor that gets no chance to stop it.
        supervisor.kill()
        supervisor.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in pids), 10, "workers to die with the pool")


def test_with_several_gpus_each_worker_of_an_auto_or_cuda_pool_sees_one() -> None:
    gpus = ["0", "1"]
    for device in ("auto", "cuda"):
        settings = Settings(device=device)
        spread = [worker_env(settings, slot, gpus)["CUDA_VISIBLE_DEVICES"] for slot in range(4)]
        assert spread == ["0", "1", "0", "1"]
    pinned = worker_env(Settings(device="cuda:1"), 0, gpus)
    assert (pinned.get("CUDA_VISIBLE_DEVICES"), pinned["SERVICE_DEVICE"]) == (
        os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda:1",
    )
