"""Idle workers wake when a job is queued, not at their next poll.

Each test sets a poll far longer than it waits (30-60 s), so only a wake-up can pass it: on
SQLite through datagram sockets beside the database, on PostgreSQL through LISTEN/NOTIFY (on a
fresh database; skipped, saying why, where no server is reachable).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import select

from service import wakeup
from service.config import Settings
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Job, JobStatus, WorkerRecord, utcnow
from service.submission import build_job
from service.training.worker import Worker
from tests.databases import BACKENDS, fresh_postgres_database, migrated_database
from tests.proc import wait_for
from tests.support import REPO, ServiceProcess, submit_job, wait_for_job

TINY = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}}
# Far longer than any test waits: a test that passes was woken, not polled.
LONG_POLL = 30.0
# Generous for a busy two-core machine, still far below LONG_POLL.
WOKEN_WITHIN = 5.0


@pytest.fixture(params=BACKENDS)
def any_db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


def timed_wait(listener: wakeup.WakeUps, timeout: float = LONG_POLL) -> tuple[bool, float]:
    start = time.monotonic()
    woken = listener.wait(timeout)
    return woken, time.monotonic() - start


def woken_by_announce(listener: wakeup.WakeUps, db: Database) -> tuple[bool, float]:
    """Wait on `listener` while another thread announces a moment later."""
    announcer = threading.Timer(0.3, wakeup.announce, [db])
    announcer.start()
    try:
        return timed_wait(listener)
    finally:
        announcer.join()  # before the database goes: its connection must be back in the pool


def test_an_announce_wakes_a_waiting_listener_long_before_its_poll(any_db: Database) -> None:
    listener = wakeup.listen(any_db)
    try:
        assert timed_wait(listener, 0.3)[0] is False  # nothing announced: it sleeps its poll out
        woken, waited = woken_by_announce(listener, any_db)
        assert woken
        assert waited < WOKEN_WITHIN
    finally:
        listener.close()


def test_one_announce_wakes_every_listener(any_db: Database) -> None:
    listeners = [wakeup.listen(any_db) for _ in range(3)]
    try:
        results: list[tuple[bool, float]] = []
        waiting = [
            threading.Thread(target=lambda lis=lis: results.append(timed_wait(lis)))
            for lis in listeners
        ]
        for thread in waiting:
            thread.start()
        announcer = threading.Timer(0.5, wakeup.announce, [any_db])
        announcer.start()
        for thread in waiting:
            thread.join(LONG_POLL + 5)
        announcer.join()
        assert len(results) == 3
        assert all(woken and waited < WOKEN_WITHIN for woken, waited in results), results
    finally:
        for listener in listeners:
            listener.close()


def test_an_announce_while_the_worker_was_busy_is_not_lost(any_db: Database) -> None:
    """A job queued between the worker's look at the queue and its wait still wakes it."""
    listener = wakeup.listen(any_db)
    try:
        wakeup.announce(any_db)
        woken, waited = timed_wait(listener)
        assert woken and waited < WOKEN_WITHIN
        assert timed_wait(listener, 0.3)[0] is False  # one announce, one wake-up
    finally:
        listener.close()


def test_wake_ends_a_wait_at_once(any_db: Database) -> None:
    """What a stopping worker does (SIGTERM): no waiting out the poll."""
    listener = wakeup.listen(any_db)
    try:
        waker = threading.Timer(0.3, listener.wake)
        waker.start()
        woken, waited = timed_wait(listener)
        waker.join()
        assert woken and waited < WOKEN_WITHIN
    finally:
        listener.close()


def test_announce_never_raises_when_the_database_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    """A lost wake-up costs a slow poll; a failed submission would cost the job."""
    unreachable = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        wakeup.announce(unreachable)
    finally:
        unreachable.dispose()
    assert "could not wake idle workers" in caplog.text


# -- SQLite: the sockets beside the database --


def sqlite_db(folder: Path) -> Database:
    folder.mkdir(parents=True, exist_ok=True)
    return Database(f"sqlite:///{folder / 'service.db'}")


def sockets(db: Database) -> list[str]:
    folder = wakeup.sockets_folder(db.engine.url)
    assert folder is not None
    return sorted(os.listdir(folder))


def test_a_dead_worker_s_socket_is_removed_and_announce_still_wakes_the_others(
    tmp_path: Path,
) -> None:
    db = sqlite_db(tmp_path)
    # A real process that listens, then is killed before it can remove its socket.
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from service.storage.db import Database\n"
            "from service.wakeup import listen\n"
            "listen(Database(sys.argv[1]))\n"
            "print('listening', flush=True)\n"
            "time.sleep(60)\n",
            str(db.engine.url),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    ) as doomed:
        try:
            assert doomed.stdout is not None and doomed.stdout.readline() == b"listening\n"
        finally:
            doomed.kill()
    (stale,) = sockets(db)
    listener = wakeup.listen(db)
    try:
        assert len(sockets(db)) == 2
        woken, waited = woken_by_announce(listener, db)
        assert woken and waited < WOKEN_WITHIN
        assert stale not in sockets(db)
        assert len(sockets(db)) == 1  # the live worker's own
    finally:
        listener.close()
    assert sockets(db) == []  # a worker that stops takes its socket with it
    db.dispose()


def test_a_database_deeper_than_a_socket_path_allows_still_wakes(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    db = sqlite_db(deep)
    assert len(str(deep / "service.storage.db.wakeup" / "12345-abcdefgh")) > 107  # sun_path's limit
    listener = wakeup.listen(db)
    try:
        assert isinstance(listener, wakeup.SocketWakeUps)
        woken, waited = woken_by_announce(listener, db)
        assert woken and waited < WOKEN_WITHIN
    finally:
        listener.close()
        db.dispose()


def test_the_wake_up_sockets_are_private(tmp_path: Path) -> None:
    db = sqlite_db(tmp_path)
    previous = os.umask(0o022)  # as a worker started outside `python -m service` might run
    try:
        listener = wakeup.listen(db)
    finally:
        os.umask(previous)
    try:
        folder = wakeup.sockets_folder(db.engine.url)
        assert folder is not None
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        (name,) = sockets(db)
        socket_mode = (folder / name).stat()
        assert stat.S_ISSOCK(socket_mode.st_mode)
        assert stat.S_IMODE(socket_mode.st_mode) & 0o077 == 0
    finally:
        listener.close()
        db.dispose()


def test_an_in_memory_database_falls_back_to_the_poll() -> None:
    db = Database("sqlite://")
    listener = wakeup.listen(db)
    try:
        wakeup.announce(db)
        woken, waited = timed_wait(listener, 0.3)
        assert not woken and waited >= 0.25
    finally:
        listener.close()
        db.dispose()


# -- PostgreSQL: the listening connection --


def listening_backends(admin: sa.Engine) -> list[int]:
    with admin.connect() as connection:
        return list(
            connection.scalars(
                sa.text(
                    "SELECT pid FROM pg_stat_activity "
                    "WHERE datname = current_database() AND query = :listen"
                ),
                {"listen": f"LISTEN {wakeup.CHANNEL}"},
            )
        )


def test_the_listener_comes_back_after_its_connection_is_terminated() -> None:
    with fresh_postgres_database() as url:
        db = Database(url)
        listener = wakeup.listen(db)
        try:
            (first,) = listening_backends(db.engine)
            with db.engine.connect() as connection:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})

            def reconnected() -> bool:
                listener.wait(0.2)  # where it notices the loss, and reconnects after a backoff
                return listening_backends(db.engine) not in ([], [first])

            wait_for(reconnected, 30, "the listener to reconnect")
            (second,) = listening_backends(db.engine)
            assert second != first
            listener.wait(0)  # the wake-up its reconnect gives (announces may have been lost)
            assert timed_wait(listener, 0.3)[0] is False
            woken, waited = woken_by_announce(listener, db)
            assert woken and waited < WOKEN_WITHIN
        finally:
            listener.close()
            db.dispose()


# -- the worker's loop, in-process --


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, database_url: str) -> Iterator[str]:
    with migrated_database(request.param, database_url) as database:
        yield database.engine.url.render_as_string(hide_password=False)


def idle_worker(settings: Settings, **changes: object) -> tuple[Worker, threading.Thread]:
    """A worker running its loop in a thread, idle (registered, nothing queued) when returned."""
    worker = Worker(settings.model_copy(update=changes))
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()

    def registered() -> bool:
        with worker.db.read() as session:
            return session.scalar(select(WorkerRecord.id).limit(1)) is not None

    wait_for(registered, 30, "the worker to register")
    time.sleep(0.5)  # into its idle wait
    return worker, thread


def stop(worker: Worker, thread: threading.Thread) -> float:
    start = time.monotonic()
    worker.request_stop()
    thread.join(LONG_POLL + 10)
    assert not thread.is_alive()
    worker.db.dispose()
    return time.monotonic() - start


def test_a_stop_ends_an_idle_worker_s_wait_at_once(settings: Settings, backend_url: str) -> None:
    worker, thread = idle_worker(
        settings, database_url=backend_url, poll_seconds=LONG_POLL, sweep_seconds=LONG_POLL
    )
    assert stop(worker, thread) < WOKEN_WITHIN


def test_an_idle_worker_still_sweeps_expired_leases_on_schedule(
    settings: Settings, backend_url: str
) -> None:
    """Its wait ends at the next sweep: a job whose worker vanished is taken over in seconds,
    though nothing announces it and the poll is long."""
    worker, thread = idle_worker(
        settings, database_url=backend_url, poll_seconds=LONG_POLL, sweep_seconds=0.5
    )
    try:
        job = build_job(JobCreate.model_validate(TINY), settings)
        with worker.db.write() as session:
            queue.enqueue(session, job)  # no announce: only the sweep can find it
            job.status = JobStatus.RUNNING
            job.lease_owner = "a-worker-that-vanished"
            job.lease_expires_at = utcnow() - timedelta(seconds=1)
            job.attempts = 1

        def finished() -> bool:
            with worker.db.read() as session:
                status = session.scalar(select(Job.status).where(Job.id == job.id))
            return status == JobStatus.SUCCEEDED

        wait_for(finished, 20, "the idle worker to sweep the lease and run the job")
    finally:
        stop(worker, thread)


# -- end to end: real processes, a long poll, a job picked up at once --

SLOW_FALLBACK = {
    "SERVICE_POLL_SECONDS": str(2 * LONG_POLL),
    "SERVICE_SWEEP_SECONDS": str(2 * LONG_POLL),  # its deadline would also end an idle wait
}


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def pickup_after_idle(client: httpx.Client) -> float:
    """Seconds from submit to start of a job sent to a worker that went idle before it."""
    wait_for_job(client, submit_job(client, TINY))  # the worker is up and has run one job
    time.sleep(1.0)  # and is waiting again
    job = wait_for_job(client, submit_job(client, TINY), ("running", "succeeded"), timeout=60)
    return seconds_between(job["created_at"], job["started_at"])


@pytest.mark.e2e
def test_serve_on_sqlite_starts_a_job_at_once_and_stops_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    server = ServiceProcess(url, "serve", log_path=tmp_path / "serve.log", env=SLOW_FALLBACK)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert pickup_after_idle(client) < WOKEN_WITHIN, server.log_tail()
    finally:
        start = time.monotonic()
        assert server.stop() == 0, server.log_tail()
    # serve's idle worker heard SIGTERM mid-wait (it would otherwise wait out its poll).
    assert time.monotonic() - start < 15, server.log_tail()


@pytest.mark.e2e
def test_api_and_worker_on_postgresql_start_a_job_at_once(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        upgrade(url)
        api = ServiceProcess(url, "api", log_path=tmp_path / "api.log", env=SLOW_FALLBACK)
        worker = ServiceProcess(url, "worker", log_path=tmp_path / "worker.log", env=SLOW_FALLBACK)
        try:
            api.start()
            worker.start()
            with httpx.Client(base_url=api.url, timeout=30) as client:
                assert pickup_after_idle(client) < WOKEN_WITHIN, worker.log_tail()
            start = time.monotonic()
            assert worker.stop() == 0, worker.log_tail()
            assert time.monotonic() - start < 15, worker.log_tail()
        finally:
            for process in (worker, api):
                process.stop()
