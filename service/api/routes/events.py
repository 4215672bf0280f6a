"""Live training events as Server-Sent Events: one job's epochs and status changes, and the
status changes of all the caller's jobs. service/events.py has the id scheme and the reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from service import events
from service.api.auth import Principal
from service.api.deps import DatabaseDep, PrincipalDep, SettingsDep, job_or_404
from service.config import Settings
from service.schemas import ErrorOut
from service.storage.db import Database

router = APIRouter(tags=["events"])

# No proxy or browser may cache or buffer a live stream (X-Accel-Buffering: nginx's switch).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BAD_LAST_EVENT_ID: dict[str, Any] = {
    "model": ErrorOut,
    "description": "Last-Event-ID is not an id this stream sends",
}


def stream_doc(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        400: BAD_LAST_EVENT_ID,
    }


LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=100,
        description="The id of the last event received: the stream resumes right after it.",
    ),
]


def timing(settings: Settings) -> events.StreamTiming:
    return events.StreamTiming(settings.event_poll_seconds, settings.event_heartbeat_seconds)


def event_stream(request: Request, poll: events.Poll, settings: Settings) -> StreamingResponse:
    body = events.stream(poll, request.is_disconnected, timing(settings))
    return StreamingResponse(body, media_type="text/event-stream", headers=STREAM_HEADERS)


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses={
        **stream_doc(
            "`epoch` events (epoch, epochs, train_loss, val_loss, elapsed and eta in seconds), "
            "`status` events (job_id, status, epoch, error) and a final `end` event, after "
            "which the stream closes. Each id is `epoch:sequence`; send the last one back as "
            "Last-Event-ID to get exactly the events missed."
        ),
        404: {"model": ErrorOut, "description": "No job with this id"},
    },
)
async def stream_job_events(
    job_id: str,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """A job's training as it happens: every epoch and status change from the beginning
    (or after Last-Event-ID), through any API replica."""
    cursor = events.JobCursor.parse(last_event_id)
    await run_in_threadpool(check_job, db, job_id, principal)
    return event_stream(request, events.job_poll(db, job_id, cursor), settings)


def check_job(db: Database, job_id: str, principal: Principal) -> None:
    with db.read() as session:
        job_or_404(session, job_id, principal)


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses=stream_doc(
        "`status` events (job_id, status, epoch, error) of every job this key owns (every job "
        "for an admin key), from now on, or after Last-Event-ID. Each id is a sequence number."
    ),
)
async def stream_events(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Status changes of all the caller's jobs as they happen; the stream stays open."""
    after = events.parse_log_position(last_event_id)
    if after is None:
        after = await run_in_threadpool(events.latest_log_position, db)
    poll = events.status_change_poll(db, principal.owner_filter, after)
    return event_stream(request, poll, settings)
