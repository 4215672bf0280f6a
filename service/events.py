"""Training as Server-Sent Events, read from the database alone, so any API replica can serve
any stream: a job's loss rows (one `epoch` event each) and its status changes (`status`
events, from the job_status_events log) as one ordered, resumable sequence.

Event ids are cursors, not names. A job stream's id is "E:S": the client has every epoch up
to E and every status change of the job up to log position S. Each event's id is the cursor
right after it, so a client that reconnects with Last-Event-ID: E:S gets exactly the loss rows
after epoch E and the status changes after S, in order, and nothing twice. A status change
carries the epoch it happened after (the job's progress when it changed), so it is sent after
that epoch's event and before the next one. Epochs a resumed job trains again (after a lost
worker, from its last checkpoint) keep the values first sent: their numbers are at or below E.

GET /events ids are log positions alone ("S"): every status change of the caller's jobs after S.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from service.errors import BadRequest
from service.storage.db import Database
from service.storage.models import TERMINAL_STATUSES, Job, JobStatusEvent, LossRecord

log = logging.getLogger("service.events")

# A comment line: clients ignore it, proxies see traffic and keep an idle stream open.
HEARTBEAT = b": keep-alive\n\n"
# Rows one poll reads at most, so replaying a long history never holds it all in memory.
ROWS_PER_POLL = 1000


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict[str, Any]
    # None for `end`: a client's last id stays the final status, which a reconnect resumes from.
    id: str | None = None

    def encode(self) -> bytes:
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: ".encode() + orjson.dumps(self.data) + b"\n\n"


@dataclass(frozen=True)
class JobCursor:
    """Where a job stream stands: the last epoch sent and the last status change sent."""

    epoch: int = 0
    seq: int = 0

    def __str__(self) -> str:
        return f"{self.epoch}:{self.seq}"

    @classmethod
    def parse(cls, last_event_id: str | None) -> JobCursor:
        if last_event_id is None or not last_event_id.strip():
            return cls()
        epoch, _, seq = last_event_id.strip().partition(":")
        if not (epoch.isdigit() and seq.isdigit()):
            raise BadRequest(
                f"Last-Event-ID {last_event_id[:40]!r} is not an id of this stream "
                "(epoch:sequence, as its events carry); leave it out to start from the beginning"
            )
        return cls(int(epoch), int(seq))


def parse_log_position(last_event_id: str | None) -> int | None:
    """A GET /events id, or None without one."""
    if last_event_id is None or not last_event_id.strip():
        return None
    if not last_event_id.strip().isdigit():
        raise BadRequest(
            f"Last-Event-ID {last_event_id[:40]!r} is not an id of this stream (a sequence "
            "number, as its events carry); leave it out to start from now"
        )
    return int(last_event_id.strip())


@dataclass
class JobPoll:
    events: list[Event] = field(default_factory=list)
    # The job has ended and every event up to its end has been sent.
    ended: bool = False
    # The job is no longer there (deleted): the stream stops.
    gone: bool = False


def epoch_event(row: LossRecord, epochs: int, cursor: JobCursor) -> Event:
    # Time per epoch so far, times the epochs left: an upper bound when early stopping may end
    # the job sooner.
    eta = row.seconds / row.epoch * max(epochs - row.epoch, 0) if row.epoch > 0 else None
    data = {
        "epoch": row.epoch,
        "epochs": epochs,
        "train_loss": row.train_loss,
        "val_loss": row.val_loss,
        "elapsed": row.seconds,
        "eta": eta,
    }
    return Event("epoch", data, str(cursor))


def status_event(change: JobStatusEvent, event_id: str) -> Event:
    data = {
        "job_id": change.job_id,
        "status": change.status,
        "epoch": change.epoch,
        "error": change.error,
    }
    return Event("status", data, event_id)


def poll_job(db: Database, job_id: str, cursor: JobCursor) -> tuple[JobPoll, JobCursor]:
    """The job's events after `cursor`, and the cursor after them. One short read, no waiting.

    Read in this order: the job, then loss rows, then status changes. A status change is
    written with the loss rows up to its epoch, so one whose epoch is past the rows read here
    committed after that read: it waits for the next poll, when its rows are visible too.
    """
    with db.read() as session:
        job = session.execute(select(Job.status, Job.epochs).where(Job.id == job_id)).one_or_none()
        if job is None:
            return JobPoll(gone=True), cursor
        losses = session.scalars(
            select(LossRecord)
            .where(LossRecord.job_id == job_id, LossRecord.epoch > cursor.epoch)
            .order_by(LossRecord.epoch)
            .limit(ROWS_PER_POLL)
        ).all()
        changes = session.scalars(
            select(JobStatusEvent)
            .where(JobStatusEvent.job_id == job_id, JobStatusEvent.seq > cursor.seq)
            .order_by(JobStatusEvent.seq)
            .limit(ROWS_PER_POLL)
        ).all()
    return merge(losses, changes, cursor, job.epochs, job.status in TERMINAL_STATUSES)


def merge(
    losses: Sequence[LossRecord],
    changes: Sequence[JobStatusEvent],
    cursor: JobCursor,
    epochs: int,
    job_ended: bool,
) -> tuple[JobPoll, JobCursor]:
    poll = JobPoll()
    known_epoch = losses[-1].epoch if losses else cursor.epoch
    pending = list(losses)
    held = False
    for change in changes:
        if change.epoch > known_epoch:
            held = True  # its loss rows were not visible to this poll's read: next time
            break
        while pending and pending[0].epoch <= change.epoch:
            cursor = JobCursor(pending[0].epoch, cursor.seq)
            poll.events.append(epoch_event(pending.pop(0), epochs, cursor))
        assert change.seq is not None  # only numbered rows match seq > cursor.seq
        cursor = JobCursor(cursor.epoch, change.seq)
        poll.events.append(status_event(change, str(cursor)))
        if change.status in TERMINAL_STATUSES:
            poll.ended = True
            return poll, cursor
    for row in pending:
        cursor = JobCursor(row.epoch, cursor.seq)
        poll.events.append(epoch_event(row, epochs, cursor))
    # The job had ended before the status changes were read, so its final change is among
    # them or was sent before this poll: with nothing held back, there is nothing left.
    poll.ended = job_ended and not held and max(len(losses), len(changes)) < ROWS_PER_POLL
    return poll, cursor


def latest_log_position(db: Database) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.coalesce(func.max(JobStatusEvent.seq), 0))) or 0)


def poll_status_changes(db: Database, owner: str | None, after: int) -> list[Event]:
    """Status changes of `owner`'s jobs (every job's for None) after log position `after`."""
    conditions = [JobStatusEvent.seq > after]
    if owner is not None:
        conditions.append(JobStatusEvent.owner == owner)
    with db.read() as session:
        changes = session.scalars(
            select(JobStatusEvent)
            .where(*conditions)
            .order_by(JobStatusEvent.seq)
            .limit(ROWS_PER_POLL)
        ).all()
    return [status_event(change, str(change.seq)) for change in changes]


@dataclass(frozen=True)
class StreamTiming:
    poll_seconds: float
    heartbeat_seconds: float


# One look at the database: the events found, and whether the stream is complete.
Poll = Callable[[], Awaitable[tuple[list[Event], bool]]]


async def stream(
    poll: Poll, disconnected: Callable[[], Awaitable[bool]], timing: StreamTiming
) -> AsyncIterator[bytes]:
    """The bytes of a stream: each poll's events as one chunk, a heartbeat when idle.

    The reads run in worker threads and end before the wait, so an open stream holds no
    database connection while it waits. A client that goes away ends the loop within a poll.
    """
    loop = asyncio.get_running_loop()
    last_write = loop.time()
    while True:
        try:
            events, complete = await poll()
        except OperationalError as exc:  # the database is briefly away: look again next time
            log.warning("event stream could not read the database: %s", exc.orig)
            events, complete = [], False
        if events:
            yield b"".join(event.encode() for event in events)
            last_write = loop.time()
        if complete:
            return
        if loop.time() - last_write >= timing.heartbeat_seconds:
            yield HEARTBEAT
            last_write = loop.time()
        await asyncio.sleep(timing.poll_seconds)
        # Servers on ASGI spec 2.4 leave noticing a gone client to the next write, which an
        # idle stream makes only once a heartbeat: look every poll instead.
        if await disconnected():
            return


def job_poll(db: Database, job_id: str, cursor: JobCursor) -> Poll:
    """A job stream's polls, from `cursor` on; it is complete after the job's `end` event."""
    position = cursor

    async def poll() -> tuple[list[Event], bool]:
        nonlocal position
        found, position = await asyncio.to_thread(poll_job, db, job_id, position)
        if found.ended:
            last = next((e for e in reversed(found.events) if e.kind == "status"), None)
            status = last.data["status"] if last else await asyncio.to_thread(status_of, db, job_id)
            found.events.append(Event("end", {"job_id": job_id, "status": status}))
        return found.events, found.ended or found.gone

    return poll


def status_of(db: Database, job_id: str) -> str | None:
    with db.read() as session:
        return session.scalar(select(Job.status).where(Job.id == job_id))


def status_change_poll(db: Database, owner: str | None, after: int) -> Poll:
    """GET /events polls: never complete, the caller's jobs may change again."""
    position = after

    async def poll() -> tuple[list[Event], bool]:
        nonlocal position
        found = await asyncio.to_thread(poll_status_changes, db, owner, position)
        if found:
            position = int(found[-1].id or position)
        return found, False

    return poll
