from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import ServiceProcess


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """`python -m service serve` with one worker, on a free port and its own SQLite file."""
    folder = tmp_path_factory.mktemp("service")
    process = ServiceProcess(f"sqlite:///{folder / 'service.db'}", log_path=folder / "service.log")
    process.start()
    yield process
    assert process.stop() == 0, process.log_tail()


@pytest.fixture(scope="module")
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=30.0) as client:
        yield client
