from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.storage.migrate import upgrade
from tests.support import ServiceProcess

Start = Callable[..., ServiceProcess]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'service.db'}"
    upgrade(url)
    return url


@pytest.fixture
def start(database_url: str, tmp_path: Path) -> Iterator[Start]:
    """Start `python -m service <command>` processes on the test's database; all stopped after."""
    started: list[ServiceProcess] = []

    def launch(command: str, name: str | None = None, **env: str) -> ServiceProcess:
        log = tmp_path / f"{name or command}-{len(started)}.log"
        process = ServiceProcess(database_url, command, log_path=log, env=env).start()
        started.append(process)
        return process

    yield launch
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.process.kill()
            process.process.wait()
        process.stop()


@pytest.fixture
def api(start: Start) -> Iterator[httpx.Client]:
    server = start("api")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
