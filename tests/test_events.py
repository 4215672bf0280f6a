"""The event log and its replay, on SQLite and PostgreSQL: a job's epochs and status changes
form one ordered sequence, and resuming after any event's id gives exactly what follows it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy import select

from service import events
from service.api.app import create_asgi_app
from service.api.http_server import server_config
from service.config import Settings
from service.errors import BadRequest
from service.events import Event, JobCursor
from service.loss_history import EpochResult
from service.schemas import JobCreate
from service.storage import queue
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import JobStatusEvent
from service.submission import build_job
from tests.databases import BACKENDS, migrated_database
from tests.support import free_port, placeholder_model

TINY = {"data": {"x": [[0.0], [1.0], [2.0]], "y": [[0.0], [0.5], [1.0]]}, "training": {"epochs": 4}}


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    with migrated_database(request.param, database_url) as database:
        yield database


def add_job(db: Database, settings: Settings, owner: str = "") -> str:
    job = build_job(JobCreate.model_validate(TINY), settings)
    job.owner = owner
    with db.write() as session:
        queue.enqueue(session, job)
    return job.id


def epoch(n: int) -> EpochResult:
    return EpochResult(epoch=n, train_loss=1.0 / n, val_loss=None, seconds=0.5 * n)


def replay(db: Database, job_id: str, cursor: JobCursor | None = None) -> list[Event]:
    """Every event after `cursor`, polling until the job's stream would close."""
    found: list[Event] = []
    cursor = cursor or JobCursor()
    for _ in range(20):
        poll, cursor = events.poll_job(db, job_id, cursor)
        found += poll.events
        if poll.ended:
            return found
    raise AssertionError(f"the stream of {job_id} never ended: {found}")


def test_a_jobs_life_replays_in_order_and_from_any_event(db: Database, settings: Settings) -> None:
    job_id = add_job(db, settings)
    assert queue.claim(db, "w1", 30) == job_id
    assert queue.record_progress(db, job_id, "w1", [epoch(1), epoch(2)])
    model = placeholder_model(job_id)
    assert queue.finish_succeeded(db, job_id, "w1", model, [epoch(3), epoch(4)], None)

    everything = replay(db, job_id)
    kinds = [(e.kind, e.data.get("status", e.data.get("epoch"))) for e in everything]
    assert kinds == [
        ("status", "queued"),
        ("status", "running"),
        ("epoch", 1),
        ("epoch", 2),
        ("epoch", 3),
        ("epoch", 4),
        ("status", "succeeded"),
    ]
    assert everything[-1].data["epoch"] == 4  # it happened after the last epoch
    assert everything[2].data == {
        "epoch": 1,
        "epochs": 4,
        "train_loss": 1.0,
        "val_loss": None,
        "elapsed": 0.5,
        "eta": 1.5,
    }
    for i, event in enumerate(everything):
        assert event.id is not None
        assert replay(db, job_id, JobCursor.parse(event.id)) == everything[i + 1 :]


def test_a_requeued_job_keeps_one_sequence(db: Database, settings: Settings) -> None:
    """A worker hands the job back after epoch 3 with a checkpoint at 2; the next attempt trains
    epoch 3 again. The client already has epoch 3, so it is not sent twice."""
    job_id = add_job(db, settings)
    queue.claim(db, "w1", 30)
    assert queue.release(db, job_id, "w1", [epoch(1), epoch(2), epoch(3)], (2, b"state"))
    queue.claim(db, "w2", 30)
    assert queue.start_attempt(db, job_id, "w2", "cpu", keep_epochs=2)
    assert queue.finish_failed(db, job_id, "w2", "boom", [epoch(3), epoch(4)])

    everything = replay(db, job_id)
    kinds = [(e.kind, e.data.get("status", e.data.get("epoch"))) for e in everything]
    assert kinds == [
        ("status", "queued"),
        ("status", "running"),
        ("epoch", 1),
        ("epoch", 2),
        ("epoch", 3),
        ("status", "queued"),
        ("status", "running"),
        ("epoch", 4),
        ("status", "failed"),
    ]
    assert everything[-1].data["error"] == "boom"
    for i, event in enumerate(everything):
        assert event.id is not None
        assert replay(db, job_id, JobCursor.parse(event.id)) == everything[i + 1 :]


def test_a_status_change_waits_for_the_loss_rows_before_it() -> None:
    """A poll that read the loss rows before a later commit sees a status change past them: it
    is held back, not sent ahead of the epochs it came after."""
    change = JobStatusEvent(seq=7, job_id="j", owner="", status="succeeded", epoch=3, error=None)
    poll, cursor = events.merge([], [change], JobCursor(2, 5), epochs=3, job_ended=True)
    assert (poll.events, poll.ended, cursor) == ([], False, JobCursor(2, 5))


def test_status_changes_are_filtered_by_owner(db: Database, settings: Settings) -> None:
    start = events.latest_log_position(db)
    mine, theirs = add_job(db, settings, owner="me"), add_job(db, settings, owner="them")
    queue.claim(db, "w1", 30)
    seen = events.poll_status_changes(db, "me", start)
    assert {e.data["job_id"] for e in seen} == {mine}
    everyone = events.poll_status_changes(db, None, start)
    assert {e.data["job_id"] for e in everyone} == {mine, theirs}
    # Resuming after the first change gives the rest, in log order.
    assert events.poll_status_changes(db, None, int(everyone[0].id or 0)) == everyone[1:]
    with db.read() as session:
        assert None not in session.scalars(select(JobStatusEvent.seq)).all()


@pytest.mark.parametrize("bad", ["x", "1", "1:-2", "a:b"])
def test_a_malformed_last_event_id_is_a_bad_request(bad: str) -> None:
    with pytest.raises(BadRequest):
        JobCursor.parse(bad)


def test_an_idle_stream_sends_heartbeats_and_ends_when_the_client_leaves() -> None:
    polls = 0

    async def poll() -> tuple[list[Event], bool]:
        nonlocal polls
        polls += 1
        return [], False

    async def disconnected() -> bool:
        return polls >= 10

    async def read() -> list[bytes]:
        timing = events.StreamTiming(poll_seconds=0.01, heartbeat_seconds=0.03)
        return [chunk async for chunk in events.stream(poll, disconnected, timing)]

    chunks = asyncio.run(asyncio.wait_for(read(), timeout=5))
    assert polls == 10  # it stopped polling once the client had gone
    assert chunks and set(chunks) == {events.HEARTBEAT}


def test_an_event_is_encoded_as_one_sse_message() -> None:
    event = Event("status", {"status": "running"}, "0:3")
    assert event.encode() == b'id: 0:3\nevent: status\ndata: {"status":"running"}\n\n'
    assert Event("end", {}).encode() == b"event: end\ndata: {}\n\n"


def test_a_stream_ends_when_its_client_goes_away(settings: Settings) -> None:
    """The server's task for a stream ends soon after its client closes the connection, even
    while the stream is idle (nothing is being written that could fail)."""
    settings = settings.model_copy(update={"port": free_port(), "event_poll_seconds": 0.05})
    upgrade(settings.database_url)
    server = uvicorn.Server(server_config(create_asgi_app(settings), settings, "127.0.0.1"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.01)
        url = f"http://127.0.0.1:{settings.port}/events"
        with httpx.Client() as client, client.stream("GET", url) as response:
            assert response.status_code == 200
            assert len(server.server_state.tasks) == 1
        deadline = time.monotonic() + 5
        while server.server_state.tasks or server.server_state.connections:
            assert time.monotonic() < deadline, "the stream's task outlived its client"
            time.sleep(0.02)
    finally:
        server.should_exit = True
        thread.join(10)
