"""The fleet scales out on PostgreSQL: 3 API processes and 4 workers (the docker-compose topology
run as plain processes: one `migrate`, then N `api` and M `worker`) take 200 jobs submitted at
once through different APIs while one worker dies by SIGKILL in the middle of a job. Every job
succeeds exactly once, no job is ever run by two workers at the same time (the attempt records,
timed by the database's clock, say so), and every API replica serves the same predictions."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from service.storage.db import Database
from service.storage.models import AttemptRecord, Job, LossRecord, Model
from tests.databases import fresh_postgres_database
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

APIS = 3
WORKERS = 4
JOBS = 200
API_KEY = "scale-out-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN_KEY = "scale-out-admin"  # only an admin key may list the fleet's workers
TERMINAL = ("succeeded", "failed", "cancelled")

# Every process of the fleet shares these, as the replicas of docker-compose.yml do.
FLEET_ENV = {
    "SERVICE_API_KEYS": API_KEY,
    "SERVICE_ADMIN_KEYS": ADMIN_KEY,
    # The owner digest is an HMAC keyed by this: replicas with different secrets would not
    # recognise each other's jobs as this key's.
    "SERVICE_OWNER_SECRET": "scale-out-owner-secret",
    # Short enough that the killed worker's job is back in the queue within seconds, yet ten
    # heartbeats per lease, so a live worker on a busy 2-core machine does not lose its lease.
    "SERVICE_HEARTBEAT_SECONDS": "0.3",
    "SERVICE_LEASE_SECONDS": "3",
    "SERVICE_SWEEP_SECONDS": "0.5",
    # All 200 jobs belong to one key; the default quota would refuse half of them with 429.
    "SERVICE_MAX_ACTIVE_JOBS_PER_KEY": str(JOBS),
}

# A small job takes a worker a fraction of a second; every 50th is long (800 steps: a second
# or more), so one is certain to be running when the kill comes. Each job has its own seed
# and data: its own model.
LONG_EVERY = 50
SHORT_EPOCHS = 4
LONG_EPOCHS = 100
PROBE = {"inputs": [[-1.5], [0.25], [2.0]]}


def job_body(index: int) -> dict[str, Any]:
    x = [[i / 4.0] for i in range(-8, 8)]
    slope = 0.1 + (index % 17) / 20.0
    long = index % LONG_EVERY == 0
    return {
        "name": f"scale-{index}",
        "data": {"x": x, "y": [[slope * row[0]] for row in x]},
        "model": {"hidden_layers": [8]},
        "training": {
            "epochs": LONG_EPOCHS if long else SHORT_EPOCHS,
            "batch_size": 2 if long else 8,
            "seed": index,
        },
    }


class FleetProcess(ServiceProcess):
    """A process of the fleet. Several start at once, each importing torch, on a machine that
    may have 2 cores: an API may take far longer than one alone would to answer its first
    health check."""

    def wait_healthy(self, timeout: float = 180.0) -> None:
        super().wait_healthy(timeout)


@dataclass
class Fleet:
    database_url: str
    folder: Path
    processes: list[ServiceProcess] = field(default_factory=list)

    def process(self, command: str, name: str) -> ServiceProcess:
        server = FleetProcess(
            self.database_url, command, log_path=self.folder / f"{name}.log", env=FLEET_ENV
        )
        self.processes.append(server)
        return server

    def logs(self) -> str:
        return "\n".join(
            f"----- {server.log_path.name if server.log_path else server.command} -----\n"
            f"{server.log_tail(60)}"
            for server in self.processes
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with fresh_postgres_database() as url:
        fleet = Fleet(url, tmp_path)
        try:
            yield fleet
        finally:
            # Stopped before the database is dropped under them; signalled all at once, so
            # their shutdowns overlap instead of adding up.
            for server in fleet.processes:
                if server.process is not None and server.process.poll() is None:
                    server.signal(signal.SIGTERM)
            for server in fleet.processes:
                # One that ignores SIGTERM is killed by stop(), which then raises: go on.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.stop(timeout=15)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


def test_a_fleet_runs_every_job_exactly_once_through_a_worker_kill(fleet: Fleet) -> None:
    try:
        run_scenario(fleet)
    except BaseException:
        # Captured, so shown only when the test fails: what each process said.
        print(fleet.logs())
        raise


def run_scenario(fleet: Fleet) -> None:
    began = time.monotonic()
    migrate = fleet.process("migrate", "migrate").start()
    assert migrate.process is not None
    assert migrate.process.wait(timeout=60) == 0, migrate.log_tail()

    # The APIs first, together (each start() waits until its API answers), then the workers,
    # so four more torch imports do not slow the APIs' start past their health-check wait.
    apis = [fleet.process("api", f"api-{n}") for n in range(APIS)]
    with ThreadPoolExecutor(APIS) as starting:
        list(starting.map(FleetProcess.start, apis))
    workers = [fleet.process("worker", f"worker-{n}").start() for n in range(WORKERS)]
    pids = {server.process.pid: server for server in workers if server.process is not None}

    db = Database(fleet.database_url)
    clients = [httpx.Client(base_url=a.url, headers=AUTH, timeout=60) for a in apis]
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        wait_until(
            lambda: len(clients[0].get("/workers", headers=admin).json()["workers"]) == WORKERS,
            180,
            "every worker to join the fleet",
        )
        started = time.monotonic()
        print(f"fleet up in {started - began:.1f} s")

        # All 200 at once, round-robin over the APIs; the kill is watched for meanwhile.
        with ThreadPoolExecutor(16) as submitting:
            submitted: list[Future[httpx.Response]] = [
                submitting.submit(clients[i % APIS].post, "/jobs", json=job_body(i))
                for i in range(JOBS)
            ]
            killed_worker, killed_job = kill_a_worker_mid_job(db, pids)
            responses = [f.result() for f in submitted]
        for response in responses:
            assert response.status_code == 202, response.text
        job_ids = [r.json()["id"] for r in responses]
        assert len(set(job_ids)) == JOBS

        wait_until(lambda: all_terminal(db, job_ids), 150, "every job to end")
        print(f"200 jobs ended {time.monotonic() - started:.1f} s after the first submit")

        check_jobs_and_models(db, job_ids)
        check_attempts(db, job_ids, killed_worker, killed_job)
        check_replicas_agree(clients, job_ids, killed_job)
    finally:
        for client in clients:
            client.close()
        db.dispose()


def kill_a_worker_mid_job(db: Database, workers: dict[int, ServiceProcess]) -> tuple[str, str]:
    """SIGKILL the worker holding a long job's lease while that job is in its first half:
    its lease is certain to be live, and the job cannot finish before the signal lands.
    Returns the killed worker's id and the job it held."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.read() as session:
            running = session.execute(
                select(Job.id, Job.lease_owner).where(
                    Job.status == "running",
                    Job.epochs == LONG_EPOCHS,
                    Job.epoch < LONG_EPOCHS // 2,
                    Job.lease_owner.is_not(None),
                )
            ).all()
        for job_id, owner in running:
            assert owner is not None  # selected so
            # Worker ids are "host:pid:nonce": the pid says which of our processes holds it.
            pid = int(owner.rsplit(":", 2)[1])
            if pid in workers:
                os.kill(pid, signal.SIGKILL)
                process = workers[pid].process
                assert process is not None and process.wait(timeout=10) == -signal.SIGKILL
                print(f"killed worker {owner} while it ran job {job_id}")
                return owner, job_id
        time.sleep(0.02)
    raise AssertionError("no long job was seen running on one of our workers")


def all_terminal(db: Database, job_ids: list[str]) -> bool:
    with db.read() as session:
        done = session.scalar(
            select(func.count()).where(Job.id.in_(job_ids), Job.status.in_(TERMINAL))
        )
    return done == len(job_ids)


def check_jobs_and_models(db: Database, job_ids: list[str]) -> None:
    with db.read() as session:
        statuses = Counter(session.scalars(select(Job.status).where(Job.id.in_(job_ids))).all())
        errors = session.execute(
            select(Job.id, Job.error).where(Job.id.in_(job_ids), Job.status != "succeeded")
        ).all()
        models = Counter(session.scalars(select(Model.id)).all())
        epochs = {row.id: row.epochs for row in session.execute(select(Job.id, Job.epochs))}
        loss_rows = {
            row.job_id: row.rows
            for row in session.execute(
                select(LossRecord.job_id, func.count().label("rows")).group_by(LossRecord.job_id)
            )
        }
    assert statuses == {"succeeded": JOBS}, errors
    # A model's id is its job's: exactly the 200 jobs' models, none twice, none extra.
    assert models == Counter(job_ids)
    # A rerun after the kill leaves one loss row per epoch, not the dead attempt's as well.
    assert loss_rows == epochs


def check_attempts(db: Database, job_ids: list[str], killed_worker: str, killed_job: str) -> None:
    with db.read() as session:
        records = session.scalars(
            select(AttemptRecord).order_by(AttemptRecord.started_at, AttemptRecord.id)
        ).all()
    by_job: dict[str, list[AttemptRecord]] = defaultdict(list)
    for record in records:
        by_job[record.job_id].append(record)
    assert set(by_job) == set(job_ids), "a job ran without an attempt record"

    for job_id, attempts in by_job.items():
        outcomes = [a.outcome for a in attempts]
        assert outcomes.count("succeeded") == 1, (job_id, outcomes)
        assert all(a.ended_at is not None for a in attempts), (job_id, outcomes)
        # One worker at a time: each attempt begins no earlier than the one before it ended.
        for before, after in itertools.pairwise(attempts):
            assert before.ended_at is not None and after.started_at >= before.ended_at, (
                job_id,
                [(a.worker_id, a.started_at, a.ended_at, a.outcome) for a in attempts],
            )
        assert attempts[-1].outcome == "succeeded", (job_id, outcomes)

    # The kill hit a running job, the sweep expired its attempt, and another worker finished it.
    killed = [(a.job_id, a.outcome) for a in records if a.worker_id == killed_worker]
    assert (killed_job, "expired") in killed, killed
    assert by_job[killed_job][-1].worker_id != killed_worker
    print(f"{len(records)} attempts for {len(job_ids)} jobs; the killed worker's: {killed}")


def check_replicas_agree(clients: list[httpx.Client], job_ids: list[str], killed_job: str) -> None:
    """A model trained anywhere predicts the same through every API replica, the rerun one too."""
    for model_id in [killed_job, *job_ids[1:200:40]]:
        answers = []
        for client in clients:
            response = client.post(f"/models/{model_id}/predict", json=PROBE)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert answers[0] == answers[1] == answers[2], (model_id, answers)
        assert len(answers[0]["predictions"]) == len(PROBE["inputs"])
    # Each replica lists the same 200 finished jobs for this key.
    for client in clients:
        listed = client.get("/jobs", params={"status": "succeeded", "limit": 1}).json()
        assert listed["total"] == JOBS
