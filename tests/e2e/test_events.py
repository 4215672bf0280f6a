"""Live training events over real HTTP: `serve` trains, clients stream with httpx, and a second
API process on the same database serves the same streams."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support import ServiceProcess, sinc_data, submit_job, wait_for_job

pytestmark = pytest.mark.e2e

KEY, OTHER_KEY = "events-key", "other-events-key"
HEARTBEAT_SECONDS = 0.3
# Timeouts far shorter than the streams in this module: a stream must outlive them all.
ENV = {
    "SERVICE_API_KEYS": f"{KEY},{OTHER_KEY}",
    "SERVICE_EVENT_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
    "SERVICE_EVENT_POLL_SECONDS": "0.1",
    "SERVICE_BODY_TIMEOUT_SECONDS": "1",
    "SERVICE_HEADER_TIMEOUT_SECONDS": "1",
    "SERVICE_KEEP_ALIVE_SECONDS": "1",
}
TERMINAL = ("succeeded", "failed", "cancelled")


def small_job(epochs: int = 40) -> dict[str, Any]:
    """A job of a few seconds on a CPU: long enough to reconnect while it runs."""
    x, y = sinc_data(30)
    return {
        "data": {"x": x.tolist(), "y": y.tolist()},
        "model": {"hidden_layers": [16]},
        "training": {"epochs": epochs, "batch_size": 30},
    }


@dataclass
class Received:
    events: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: int = 0
    closed: bool = False  # the server ended the stream


def headers(key: str = KEY, last_event_id: str | None = None) -> dict[str, str]:
    found = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        found["Last-Event-ID"] = last_event_id
    return found


def read_stream(
    url: str,
    path: str,
    *,
    key: str = KEY,
    last_event_id: str | None = None,
    until: Callable[[dict[str, Any]], bool] | None = None,
    on_open: Callable[[], None] | None = None,
    seconds: float = 60.0,
) -> Received:
    """Events of a stream until the server closes it, `until(event)` is true, or `seconds`."""
    received = Received()
    message: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    with (
        httpx.Client(base_url=url, timeout=10.0) as client,
        client.stream("GET", path, headers=headers(key, last_event_id)) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        if on_open is not None:
            on_open()
        for line in response.iter_lines():
            if line.startswith(":"):
                received.heartbeats += 1
            elif line:
                name, _, value = line.partition(": ")
                message[name] = value
            elif message:
                event = {"kind": message["event"], "id": message.get("id")}
                received.events.append({**event, "data": json.loads(message["data"])})
                message = {}
                if until is not None and until(received.events[-1]):
                    return received
            if time.monotonic() > deadline:
                return received
        received.closed = True
    return received


def summary(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(e["kind"], e["data"].get("status", e["data"].get("epoch"))) for e in events]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("events")
    process = ServiceProcess(
        f"sqlite:///{folder / 'service.db'}", log_path=folder / "service.log", env=ENV
    ).start()
    yield process
    assert process.stop() == 0, process.log_tail()
    assert "Traceback" not in process.log_tail(100_000)


@pytest.fixture(scope="module")
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30.0, headers=headers()) as client:
        yield client


@pytest.fixture(scope="module")
def replica(service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second API process on the same database, far from the worker."""
    folder = tmp_path_factory.mktemp("replica")
    process = ServiceProcess(
        service.database_url, "api", log_path=folder / "api.log", env=ENV
    ).start()
    yield process.url
    assert process.stop() == 0, process.log_tail()
    assert "Traceback" not in process.log_tail(100_000)


@pytest.fixture(scope="module")
def finished_job(service: ServiceProcess, api: httpx.Client) -> tuple[str, Received]:
    """A job streamed live from its submission to its end."""
    job_id = submit_job(api, small_job())
    return job_id, read_stream(service.url, f"/jobs/{job_id}/events")


def test_a_jobs_events_arrive_in_order_and_the_stream_closes_after_end(
    finished_job: tuple[str, Received],
) -> None:
    job_id, live = finished_job
    assert live.closed
    kinds = summary(live.events)
    assert kinds[:2] == [("status", "queued"), ("status", "running")]
    assert kinds[2:-2] == [("epoch", n) for n in range(1, 41)]
    assert kinds[-2:] == [("status", "succeeded"), ("end", "succeeded")]
    first = live.events[2]["data"]
    assert first["epochs"] == 40 and first["train_loss"] > 0 and first["elapsed"] > 0
    assert first["eta"] >= 0 and live.events[-3]["data"]["eta"] == 0
    assert live.events[-2]["data"] == {
        "job_id": job_id,
        "status": "succeeded",
        "epoch": 40,
        "error": None,
    }


def test_a_stream_opened_after_the_job_ended_replays_everything(
    service: ServiceProcess, finished_job: tuple[str, Received]
) -> None:
    job_id, live = finished_job
    replayed = read_stream(service.url, f"/jobs/{job_id}/events")
    assert replayed.closed and replayed.events == live.events
    # Resuming after the final status gives the end alone.
    final = live.events[-2]["id"]
    tail = read_stream(service.url, f"/jobs/{job_id}/events", last_event_id=final)
    assert tail.closed and summary(tail.events) == [("end", "succeeded")]


def test_a_reconnect_gets_exactly_the_missed_events_through_either_replica(
    service: ServiceProcess, api: httpx.Client, replica: str
) -> None:
    job_id = submit_job(api, small_job(epochs=120))
    path = f"/jobs/{job_id}/events"
    before = read_stream(service.url, path, until=lambda e: e["kind"] == "epoch")
    assert not before.closed and before.events[-1]["data"]["epoch"] == 1
    # The rest, from the other API process, resuming after the last event the client had.
    after = read_stream(replica, path, last_event_id=before.events[-1]["id"])
    assert after.closed and summary(after.events)[-1] == ("end", "succeeded")
    whole = read_stream(replica, path)
    assert before.events + after.events == whole.events
    assert [e["data"]["epoch"] for e in whole.events if e["kind"] == "epoch"] == list(range(1, 121))


def test_an_idle_stream_sends_heartbeats_and_outlives_the_connection_timeouts(
    replica: str,
) -> None:
    """Idle for three times the body, header and keep-alive timeouts, and still open."""
    idle = read_stream(replica, "/events", seconds=3.0)
    assert not idle.closed and idle.events == []
    assert idle.heartbeats >= 3.0 / HEARTBEAT_SECONDS * 0.6


def test_the_events_stream_sees_status_changes_of_the_callers_jobs(
    service: ServiceProcess, api: httpx.Client
) -> None:
    with httpx.Client(base_url=service.url, headers=headers(OTHER_KEY)) as other:
        theirs = submit_job(other, small_job(epochs=2))
    mine: list[str] = []

    def done(event: dict[str, Any]) -> bool:
        return (
            bool(mine)
            and event["data"]["job_id"] == mine[0]
            and event["data"]["status"] in TERMINAL
        )

    # Opened before the job exists: its changes arrive live.
    with ThreadPoolExecutor(1) as pool:
        opened = threading.Event()
        live = pool.submit(read_stream, service.url, "/events", until=done, on_open=opened.set)
        assert opened.wait(10)
        mine.append(submit_job(api, small_job(epochs=2)))
        seen = live.result(timeout=60)
    statuses = [e["data"]["status"] for e in seen.events if e["data"]["job_id"] == mine[0]]
    assert statuses == ["queued", "running", "succeeded"]
    assert theirs not in {e["data"]["job_id"] for e in seen.events}
    ids = [int(e["id"]) for e in seen.events]
    assert ids == sorted(set(ids))
    # Resuming after the first of them gives exactly the rest.
    rest = read_stream(service.url, "/events", last_event_id=seen.events[0]["id"], until=done)
    assert rest.events == seen.events[1:]


def test_a_job_of_another_key_or_none_is_not_found(service: ServiceProcess) -> None:
    with httpx.Client(base_url=service.url, headers=headers(OTHER_KEY)) as other:
        theirs = submit_job(other, small_job(epochs=2))
        wait_for_job(other, theirs)
    with httpx.Client(base_url=service.url, headers=headers()) as client:
        for job_id in (theirs, "no-such-job"):
            answer = client.get(f"/jobs/{job_id}/events")
            assert answer.status_code == 404 and answer.json()["error"] == "not_found"
        bad = client.get(f"/jobs/{theirs}/events", headers={"Last-Event-ID": "soon"})
        assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
        assert client.get("/events", headers={"Last-Event-ID": "1:2"}).status_code == 400
    assert httpx.get(f"{service.url}/events").status_code == 401
