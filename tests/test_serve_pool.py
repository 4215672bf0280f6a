"""`serve` restarts a worker process that died, and the restarted worker trains jobs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ServiceProcess, wait_for_job

pytestmark = pytest.mark.e2e

JOB = {
    "data": {"x": [[0.0], [1.0], [2.0], [3.0]], "y": [[0.0], [0.3], [0.6], [0.9]]},
    "training": {"epochs": 5, "batch_size": 2},
}


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of `pid`, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited while we looked
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def wait_for(condition: object, timeout: float = 60.0, what: str = "condition") -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        f"sqlite:///{tmp_path / 'service.db'}", workers=1, log_path=tmp_path / "serve.log"
    ).start()
    yield process
    assert process.stop(timeout=120) == 0, process.log_tail()


def test_a_killed_worker_is_replaced_and_the_replacement_trains(server: ServiceProcess) -> None:
    assert server.process is not None
    serve_pid = server.process.pid
    wait_for(lambda: len(children(serve_pid)) == 1, what="serve's one worker")
    (victim,) = children(serve_pid)

    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(serve_pid), what="the killed worker to be reaped")
    wait_for(lambda: len(children(serve_pid)) == 1, what="a replacement worker")
    (replacement,) = children(serve_pid)
    assert replacement != victim
    assert f"worker pid {victim} exited with -9; restarting it" in server.log_tail(200)

    # The pool had one worker and it was killed: only the replacement can train this job.
    with httpx.Client(base_url=server.url, timeout=30) as api:
        response = api.post("/jobs", json=JOB)
        assert response.status_code == 202, response.text
        job = wait_for_job(api, response.json()["id"], timeout=120)
    assert job["status"] == "succeeded", server.log_tail()
    assert children(serve_pid) == {replacement}
