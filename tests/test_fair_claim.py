"""The claim takes turns between owners: one key's backlog cannot starve another key's job.

Queue-level, on a real SQLite file and on a fresh PostgreSQL database (skipped, saying why,
when none is reachable): the claim is one SQL statement, and both dialects must rank alike.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from service.config import Settings
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Job, utcnow
from service.submission import build_job
from tests.databases import BACKENDS, migrated_database
from tests.support import ServiceProcess, placeholder_model, submit_job, wait_for_job

TINY = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}}


@pytest.fixture(params=BACKENDS)
def queue_db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


class Clock:
    """Creation times a millisecond apart, in the order jobs are queued: the order within an
    owner is stated, not left to the clock's resolution."""

    def __init__(self) -> None:
        self.start = utcnow()
        self.ticks = 0

    def next(self) -> timedelta:
        self.ticks += 1
        return timedelta(milliseconds=self.ticks)


def queue_jobs(db: Database, clock: Clock, owner: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        job = build_job(JobCreate.model_validate(TINY), Settings())
        job.owner = owner
        job.created_at = clock.start + clock.next()
        with db.write() as session:
            queue.enqueue(session, job)
        ids.append(job.id)
    return ids


def owner_of(db: Database, job_id: str | None) -> str:
    assert job_id is not None
    with db.read() as session:
        owner = session.scalar(select(Job.owner).where(Job.id == job_id))
    assert owner is not None
    return owner


def finish(db: Database, job_id: str, worker_id: str) -> None:
    outcome = queue.finish_succeeded(db, job_id, worker_id, placeholder_model(job_id), [], None)
    assert outcome == "succeeded"


def test_a_late_owner_s_one_job_is_claimed_within_two_claims(queue_db: Database) -> None:
    clock = Clock()
    alice = queue_jobs(queue_db, clock, "alice", 30)
    (bob,) = queue_jobs(queue_db, clock, "bob", 1)
    first, second = (queue.claim(queue_db, f"w{i}", 30) for i in (1, 2))
    assert first == alice[0]  # nobody has run anything yet: the oldest job goes first
    assert second == bob


def test_one_worker_alternates_between_owners(queue_db: Database) -> None:
    """With one worker nobody has a job running at each claim: the owner served longest ago
    goes next, so Bob does not wait behind Alice's backlog."""
    clock = Clock()
    alice = queue_jobs(queue_db, clock, "alice", 30)
    bob = queue_jobs(queue_db, clock, "bob", 2)
    claimed = []
    for _ in range(5):
        job_id = queue.claim(queue_db, "solo", 30)
        assert job_id is not None
        claimed.append(job_id)
        finish(queue_db, job_id, "solo")
    assert claimed == [alice[0], bob[0], alice[1], bob[1], alice[2]]


def test_each_owner_s_jobs_run_in_the_order_it_queued_them(queue_db: Database) -> None:
    clock = Clock()
    alice = queue_jobs(queue_db, clock, "alice", 3)
    bob = queue_jobs(queue_db, clock, "bob", 3)
    carol = queue_jobs(queue_db, clock, "carol", 3)
    claimed = [queue.claim(queue_db, f"w{i}", 30) for i in range(9)]
    assert queue.claim(queue_db, "w9", 30) is None
    # Round-robin: every owner once per round, each its oldest job first.
    assert claimed == [alice[0], bob[0], carol[0], alice[1], bob[1], carol[1], *claimed[6:]]
    for jobs in (alice, bob, carol):
        assert [job_id for job_id in claimed if job_id in jobs] == jobs


def test_the_owner_with_fewer_running_jobs_goes_first(queue_db: Database) -> None:
    """Alice's long jobs hold two workers; the next free worker takes Bob's job, though Bob's
    last job started after Alice's."""
    clock = Clock()
    alice = queue_jobs(queue_db, clock, "alice", 4)
    bob = queue_jobs(queue_db, clock, "bob", 3)
    assert [queue.claim(queue_db, w, 30) for w in ("w1", "w2", "w3")] == [
        alice[0],
        bob[0],
        alice[1],
    ]
    finish(queue_db, bob[0], "w2")  # Bob's short job ends; Alice still runs two
    assert owner_of(queue_db, queue.claim(queue_db, "w2", 30)) == "bob"


def test_the_fair_claim_still_claims_each_job_once(queue_db: Database) -> None:
    clock = Clock()
    ids = queue_jobs(queue_db, clock, "alice", 5) + queue_jobs(queue_db, clock, "bob", 5)
    claimed = []
    while (job_id := queue.claim(queue_db, "w", 30)) is not None:
        claimed.append(job_id)
    assert sorted(claimed) == sorted(ids)
    with queue_db.read() as session:
        running = session.scalar(select(func.count()).where(Job.status == "running"))
    assert running == 10


def test_concurrent_fair_claims_never_take_one_job_twice(queue_db: Database) -> None:
    """Workers racing on the ranked claim (on PostgreSQL, FOR UPDATE SKIP LOCKED skips a row
    another claim holds) still take every job exactly once."""
    clock = Clock()
    ids = [job_id for owner in ("a", "b", "c") for job_id in queue_jobs(queue_db, clock, owner, 15)]
    start = threading.Barrier(4)

    def claim_all(worker_id: str) -> list[str]:
        start.wait()
        claimed = []
        while (job_id := queue.claim(queue_db, worker_id, 30)) is not None:
            claimed.append(job_id)
        return claimed

    with ThreadPoolExecutor(max_workers=4) as pool:
        per_worker = list(pool.map(claim_all, [f"w{i}" for i in range(4)]))
    claimed = [job_id for claims in per_worker for job_id in claims]
    assert sorted(claimed) == sorted(ids)


def test_through_the_service_bob_s_one_job_runs_before_alice_s_backlog(
    tmp_path: Path,
) -> None:
    """The finding, end to end: one worker, Alice's queue full of jobs, then Bob's one job."""
    database_url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(database_url)
    env = {"SERVICE_API_KEYS": "alice-key,bob-key"}
    service = ServiceProcess(database_url, "serve", log_path=tmp_path / "serve.log", env=env)
    service.start()
    alice = httpx.Client(base_url=service.url, headers={"Authorization": "Bearer alice-key"})
    bob = httpx.Client(base_url=service.url, headers={"Authorization": "Bearer bob-key"})
    try:
        slow = {**TINY, "training": {"epochs": 300, "batch_size": 1}}  # ~0.2 s each
        alices = [submit_job(alice, slow) for _ in range(8)]
        bobs = submit_job(bob, slow)
        started = wait_for_job(bob, bobs)["started_at"]
        ahead = [
            job_id
            for job_id in alices
            if (alice.get(f"/jobs/{job_id}").json()["started_at"] or "9999") < started
        ]
        # At most the job running when Bob submitted, and the one claimed just before.
        assert len(ahead) <= 2, ahead
    finally:
        alice.close()
        bob.close()
        service.stop()
