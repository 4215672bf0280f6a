"""A worker started by `serve` dies with it, even when `serve` is SIGKILLed: an orphan would go
on claiming jobs beside the next `serve`'s workers. A worker started by hand is its own boss."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.process_guard import PARENT_PID_FLAG
from service.storage.migrate import upgrade
from tests.proc import alive, children, only_worker, wait_for
from tests.support import FAST_QUEUE_ENV, REPO, ServiceProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        f"sqlite:///{tmp_path / 'service.db'}",
        workers=1,
        log_path=tmp_path / "serve.log",
    ).start()
    yield process
    process.stop()


def sigkill_serve_and_expect_its_worker_gone(server: ServiceProcess, worker: int) -> None:
    assert server.process is not None and alive(worker)
    server.signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    wait_for(lambda: not alive(worker), 5, f"worker {worker} to die with serve")


def test_a_sigkilled_serve_takes_its_worker_with_it(server: ServiceProcess) -> None:
    sigkill_serve_and_expect_its_worker_gone(server, only_worker(server))


def test_a_worker_restarted_by_serve_also_dies_with_it(server: ServiceProcess) -> None:
    # The replacement is forked by serve's monitor thread, not its main thread: the kernel's
    # parent-death signal follows the forking thread, so this is the case that could slip.
    first = only_worker(server)
    os.kill(first, signal.SIGKILL)
    assert server.process is not None
    wait_for(lambda: children(server.process.pid) - {first} != set(), 30, "a replacement")
    sigkill_serve_and_expect_its_worker_gone(server, only_worker(server))


def worker_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "service", "worker", *extra]


def worker_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        **FAST_QUEUE_ENV,
        "SERVICE_DATABASE_URL": f"sqlite:///{tmp_path / 'service.db'}",
        "SERVICE_DATA_DIR": str(tmp_path / "data"),
        "SERVICE_DEVICE": "cpu",
    }


def test_a_worker_whose_parent_died_before_it_could_follow_exits_at_once(
    tmp_path: Path,
) -> None:
    # Its parent is not the pid it was given: the parent it was started for is already gone.
    not_my_parent = 1 if os.getpid() != 1 else 2
    started = time.monotonic()
    result = subprocess.run(
        worker_command(PARENT_PID_FLAG, str(not_my_parent)),
        cwd=REPO,
        env=worker_env(tmp_path),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"is gone" in result.stderr
    assert time.monotonic() - started < 10  # before torch was even imported


def test_a_worker_started_by_hand_outlives_the_shell_that_started_it(tmp_path: Path) -> None:
    upgrade(worker_env(tmp_path)["SERVICE_DATABASE_URL"])
    shell = subprocess.run(
        ["sh", "-c", 'exec "$@" >/dev/null 2>&1 </dev/null & echo $!', "sh", *worker_command()],
        cwd=REPO,
        env=worker_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    worker = int(shell.stdout)
    try:
        time.sleep(3)  # well past the point where a worker of serve would have checked
        assert alive(worker)
    finally:
        os.kill(worker, signal.SIGTERM)
        wait_for(lambda: not alive(worker), 30, "the hand-started worker to stop")
