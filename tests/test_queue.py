"""The queue's contract, on SQLite and on PostgreSQL alike: every test runs on both."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from service.config import Settings
from service.errors import Conflict, NotFound
from service.loss_history import EpochResult
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.models import Job, JobStatus, LossRecord, Model, Sweep, utcnow
from service.submission import build_job
from tests.claimer import claim_all
from tests.databases import BACKENDS, migrated_database
from tests.support import placeholder_model

TINY = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    """This module's tests run once on the test's SQLite file, once on a fresh PostgreSQL."""
    with migrated_database(request.param, database_url) as database:
        yield database


def url_of(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=False)


def add_jobs(db: Database, settings: Settings, n: int, device: str = "auto") -> list[str]:
    """`n` queued jobs, each created a millisecond after the one before: the order the claim
    must follow, stated rather than left to the clock's resolution."""
    ids = []
    first = utcnow()
    for i in range(n):
        request = JobCreate.model_validate({**TINY, "resources": {"device": device}})
        job = build_job(request, settings)
        job.created_at = first + timedelta(milliseconds=i)
        with db.write() as session:
            queue.enqueue(session, job)
        ids.append(job.id)
    return ids


def job(db: Database, job_id: str) -> Job:
    with db.read() as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def expire_lease(db: Database, job_id: str) -> None:
    with db.write() as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_claim_takes_the_oldest_queued_job_once(db: Database, settings: Settings) -> None:
    first, second = add_jobs(db, settings, 2)
    assert queue.has_queued(db)
    assert queue.claim(db, "w1", 30) == first
    assert queue.claim(db, "w2", 30) == second
    assert queue.claim(db, "w3", 30) is None
    assert not queue.has_queued(db)
    claimed = job(db, first)
    assert (claimed.status, claimed.lease_owner, claimed.attempts) == ("running", "w1", 1)
    assert claimed.started_at is not None and claimed.lease_expires_at is not None


def test_a_job_that_requires_a_device_is_claimed_only_by_a_worker_that_has_it(
    db: Database, settings: Settings
) -> None:
    (on_gpu,) = add_jobs(db, settings, 1, device="cuda")
    (on_cpu,) = add_jobs(db, settings, 1, device="cpu")
    (anywhere,) = add_jobs(db, settings, 1)
    assert queue.has_queued(db, ["cpu"])
    assert queue.claim(db, "cpu-worker", 30, ["cpu"]) == on_cpu
    assert queue.claim(db, "cpu-worker", 30, ["cpu"]) == anywhere
    assert not queue.has_queued(db, ["cpu"])
    assert queue.claim(db, "cpu-worker", 30, ["cpu"]) is None
    assert job(db, on_gpu).status == "queued"
    assert queue.has_queued(db, ["cpu", "cuda"])
    assert queue.claim(db, "gpu-worker", 30, ["cpu", "cuda"]) == on_gpu


def test_concurrent_workers_never_claim_the_same_job(db: Database, settings: Settings) -> None:
    ids = add_jobs(db, settings, 150)
    context = multiprocessing.get_context("spawn")
    results, start = context.Queue(), context.Event()
    workers = [
        context.Process(target=claim_all, args=(url_of(db), f"w{i}", start, results))
        for i in range(4)
    ]
    for process in workers:
        process.start()
    time.sleep(1.0)  # let every claimer connect before the race starts
    start.set()
    per_worker = [results.get(timeout=60) for _ in workers]
    print("claims per worker:", [len(c) for c in per_worker])
    claimed = [job_id for claims in per_worker for job_id in claims]
    for process in workers:
        process.join(timeout=10)
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


def test_heartbeat_extends_only_our_own_lease(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 1)
    before = job(db, job_id).lease_expires_at
    lease = queue.heartbeat(db, job_id, "w1", 60)
    assert lease is not None and not lease.cancel_requested
    assert job(db, job_id).lease_expires_at > before  # type: ignore[operator]
    assert queue.heartbeat(db, job_id, "intruder", 60) is None


def test_heartbeat_reports_a_cancel_request(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 30)
    assert queue.request_cancel(db, job_id).status == "running"
    lease = queue.heartbeat(db, job_id, "w1", 30)
    assert lease is not None and lease.cancel_requested


def test_a_worker_that_lost_its_lease_writes_nothing(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "slow", 30)
    queue.record_progress(db, job_id, "slow", [EpochResult(1, 0.5, None, 0.1)])
    expire_lease(db, job_id)
    assert queue.recover_expired(db) == 1
    assert job(db, job_id).status == "queued"
    assert queue.claim(db, "fast", 30) == job_id

    row = EpochResult(2, 0.4, None, 0.2)
    assert not queue.record_progress(db, job_id, "slow", [row])
    assert not queue.finish_succeeded(db, job_id, "slow", placeholder_model(job_id), [row], None)
    assert not queue.finish_failed(db, job_id, "slow", "late")
    with db.read() as session:
        assert session.get(Model, job_id) is None
        assert session.scalars(
            select(LossRecord.epoch).where(LossRecord.job_id == job_id)
        ).all() == [1]
    current = job(db, job_id)
    assert (current.status, current.lease_owner, current.attempts) == ("running", "fast", 2)


def test_succeeding_stores_model_and_loss_rows_together(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 30)
    rows = [EpochResult(1, 0.5, 0.6, 0.1), EpochResult(2, 0.25, 0.3, 0.2)]
    assert queue.finish_succeeded(db, job_id, "w1", placeholder_model(job_id), rows, best_epoch=2)
    done = job(db, job_id)
    assert (done.status, done.epoch, done.train_loss, done.val_loss, done.best_epoch) == (
        "succeeded",
        2,
        0.25,
        0.3,
        2,
    )
    assert done.lease_owner is None and done.finished_at is not None
    with db.read() as session:
        assert session.get(Model, job_id) is not None


def test_start_attempt_drops_rows_of_an_earlier_attempt(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 30)
    queue.record_progress(db, job_id, "w1", [EpochResult(e, 1.0 / e, None, e) for e in (1, 2, 3)])
    assert queue.start_attempt(db, job_id, "w1", "cpu", keep_epochs=1)
    with db.read() as session:
        assert session.scalars(
            select(LossRecord.epoch).where(LossRecord.job_id == job_id)
        ).all() == [1]
    assert job(db, job_id).epoch == 1


def test_expired_jobs_fail_after_max_attempts(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    for attempt in range(settings.max_attempts):
        assert queue.claim(db, f"w{attempt}", 30) == job_id
        expire_lease(db, job_id)
        queue.recover_expired(db)
    failed = job(db, job_id)
    assert failed.status == "failed" and failed.attempts == settings.max_attempts
    assert "stopped responding" in (failed.error or "")


def test_expired_job_with_a_cancel_request_ends_cancelled(db: Database, settings: Settings) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 30)
    queue.request_cancel(db, job_id)
    expire_lease(db, job_id)
    queue.recover_expired(db)
    assert job(db, job_id).status == "cancelled"


def test_release_hands_the_job_back_without_counting_an_attempt(
    db: Database, settings: Settings
) -> None:
    (job_id,) = add_jobs(db, settings, 1)
    queue.claim(db, "w1", 30)
    assert queue.release(db, job_id, "w1")
    released = job(db, job_id)
    assert (released.status, released.attempts, released.lease_owner) == ("queued", 0, None)


def test_cancel_rules(db: Database, settings: Settings) -> None:
    queued_id, done_id = add_jobs(db, settings, 2)
    assert queue.request_cancel(db, queued_id).status == JobStatus.CANCELLED
    assert queue.request_cancel(db, queued_id).status == JobStatus.CANCELLED  # idempotent
    queue.claim(db, "w1", 30)
    queue.finish_succeeded(db, done_id, "w1", placeholder_model(done_id), [], None)
    with pytest.raises(Conflict):
        queue.request_cancel(db, done_id)
    with pytest.raises(NotFound):
        queue.request_cancel(db, "no-such-job")


def test_a_job_that_ends_keeps_no_checkpoint(db: Database, settings: Settings) -> None:
    handed_back, expired = add_jobs(db, settings, 2)
    for job_id in (handed_back, expired):
        assert queue.claim(db, "w1", 30) == job_id
    queue.release(db, handed_back, "w1", checkpoint=(3, b"state"))
    queue.save_checkpoint(db, expired, "w1", [], 3, b"state")
    assert queue.load_checkpoint(db, handed_back) == (3, b"state")
    queue.request_cancel(db, handed_back)  # cancelled while queued
    with db.write() as session:
        session.execute(update(Job).where(Job.id == expired).values(attempts=settings.max_attempts))
    expire_lease(db, expired)
    queue.recover_expired(db)  # fails: no attempts left
    assert job(db, expired).status == "failed"
    assert queue.load_checkpoint(db, handed_back) is None
    assert queue.load_checkpoint(db, expired) is None


def add_sweep(db: Database, settings: Settings, keys: list[str]) -> list[str]:
    """A sweep's trials, queued in order, with these stack keys."""
    sweep = Sweep(id="sweep-1", owner="", search={}, n_trials=len(keys), cancel_requested=False)
    jobs = []
    first = utcnow()
    for i, key in enumerate(keys):
        trial = build_job(JobCreate.model_validate(TINY), settings)
        trial.sweep_id, trial.stack_key = sweep.id, key
        trial.created_at = first + timedelta(milliseconds=i)
        jobs.append(trial)
    queue.enqueue_sweep(db, sweep, jobs)
    return [trial.id for trial in jobs]


def test_a_stack_claim_takes_a_trial_and_its_queued_stack_mates_at_once(
    db: Database, settings: Settings
) -> None:
    lone = add_jobs(db, settings, 1)
    trials = add_sweep(db, settings, ["a", "b", "a", "a", "a"])
    # Not a sweep's trial: alone, whatever the limit.
    assert queue.claim_stack(db, "w1", 30, max_trials=8) == lone
    # The fairest trial, then the queued trials of its stack, oldest first, up to the limit.
    assert queue.claim_stack(db, "w1", 30, max_trials=3) == [trials[0], trials[2], trials[3]]
    assert queue.claim_stack(db, "w2", 30, max_trials=8) == [trials[1]]
    assert queue.claim_stack(db, "w2", 30, max_trials=8) == [trials[4]]
    assert queue.claim_stack(db, "w2", 30, max_trials=8) == []
    for trial_id, owner in zip(trials, ["w1", "w2", "w1", "w1", "w2"], strict=True):
        claimed = job(db, trial_id)
        assert claimed.status == JobStatus.RUNNING and claimed.lease_owner == owner
        assert claimed.attempts == 1
    leases = queue.heartbeat_all(db, [trials[0], trials[1], trials[2]], "w1", 30)
    assert set(leases) == {trials[0], trials[2]}  # trials[1] is w2's
    queue.request_cancel(db, trials[2])
    assert queue.cancel_requested_among(db, trials) == {trials[2]}


def test_a_stack_claim_takes_no_more_trials_than_its_gather_budget(
    db: Database, settings: Settings
) -> None:
    trials = add_sweep(db, settings, ["a"] * 5)
    per_trial = 4 * 3 * (1 + 1)  # float32 x 3 rows x (1 feature + 1 output)
    assert queue.claim_stack(db, "w1", 30, max_trials=8, max_stack_bytes=2 * per_trial) == [
        trials[0],
        trials[1],
    ]
    assert queue.claim_stack(db, "w1", 30, max_trials=8, max_stack_bytes=per_trial - 1) == [
        trials[2]
    ]
    assert queue.claim_stack(db, "w1", 30, max_trials=8, max_stack_bytes=10**9) == trials[3:]


def test_concurrent_stack_claims_never_share_a_trial(db: Database, settings: Settings) -> None:
    trials = add_sweep(db, settings, ["a"] * 12)
    claimed: list[list[str]] = []

    def claim(worker: str) -> None:
        other = Database(url_of(db))
        try:
            while taken := queue.claim_stack(other, worker, 30, max_trials=3):
                claimed.append(taken)
        finally:
            other.dispose()

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [trial for stack in claimed for trial in stack]
    assert sorted(every) == sorted(trials)  # each trial once, none left behind
    assert all(1 <= len(stack) <= 3 for stack in claimed)
