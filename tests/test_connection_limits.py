"""The cap on open connections, against a real API process (SERVICE_MAX_CONNECTIONS=20), and
the open-file limit the API raises at start-up to fit the cap."""

from __future__ import annotations

import logging
import resource
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.api.connection_limits import RefusalLog
from service.api.http_server import FD_HEADROOM, fit_open_file_limit
from tests.support import REPO, ServiceProcess
from tests.test_http_limits import (
    SLACK,
    assert_healthy,
    connect,
    error_of,
    read_until_closed,
    start_api,
)

CAP = 20
HEADER_TIMEOUT = 3.0  # long enough to look at the held connections before they time out


@pytest.fixture
def capped_api(tmp_path: Path) -> Iterator[ServiceProcess]:
    server = start_api(
        tmp_path,
        {
            "SERVICE_MAX_CONNECTIONS": str(CAP),
            "SERVICE_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
            "SERVICE_KEEP_ALIVE_SECONDS": "1",
        },
    )
    yield server
    assert server.stop() == 0, server.log_tail()


@pytest.mark.e2e
def test_connections_beyond_the_cap_are_turned_away_at_once(capped_api: ServiceProcess) -> None:
    time.sleep(0.2)  # the start-up health check's connection is closed by now
    sockets = [connect(capped_api) for _ in range(2 * CAP)]
    try:
        held, extra = sockets[:CAP], sockets[CAP:]
        for sock in extra:
            received, _ = read_until_closed(sock, within=SLACK)
            if received:  # else reset before the answer was read: refused all the same
                status, body = error_of(received)
                assert (status, body["error"]) == (503, "overloaded")
        # The first CAP are still open: no answer, no close.
        assert not select.select(held, [], [], 0)[0]

        # A normal request meanwhile is refused cleanly and at once, never left hanging.
        started = time.monotonic()
        try:
            response = httpx.get(f"{capped_api.url}/healthz", timeout=SLACK + 3)
            assert response.status_code == 503
            assert response.json()["error"] == "overloaded"
            assert response.headers["retry-after"] == "1"
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass  # reset before the 503 was read
        assert time.monotonic() - started < SLACK

        # The held ones time out like any silent connection, and their slots come back.
        for sock in held:
            received, _ = read_until_closed(sock, within=HEADER_TIMEOUT + SLACK)
            assert error_of(received)[0] == 408
        assert_healthy(capped_api)
    finally:
        for sock in sockets:
            sock.close()


def test_the_soft_open_file_limit_is_raised_to_fit_the_cap() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1000 + FD_HEADROOM
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is below {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert fit_open_file_limit(1000) == 1000
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (wanted, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_limit_too_low_lowers_the_cap_with_a_warning() -> None:
    # Lowering a hard limit cannot be undone, so it happens in a child process.
    script = (
        "import logging, resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (100, 200))\n"
        "logging.basicConfig()\n"
        "from service.api.http_server import fit_open_file_limit\n"
        "print(fit_open_file_limit(1000))\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert child.stdout.split("\n")[:2] == [str(200 - FD_HEADROOM), "(200, 200)"]
    assert f"at most {200 - FD_HEADROOM} connections" in child.stderr


def test_refusals_are_logged_as_counts_at_most_every_ten_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = RefusalLog()
    with caplog.at_level(logging.WARNING, logger="service.api.connections"):
        refusals.note("head timeouts", now=100.0)  # the first is logged at once
        for second in range(1, 10):  # the next ten seconds' are counted...
            refusals.note("connections over the cap", now=100.0 + second)
        refusals.note("head timeouts", now=110.0)  # ...and logged together after them
    assert [record.getMessage() for record in caplog.records] == [
        "connections refused: 1 head timeouts",
        "connections refused: 9 connections over the cap, 1 head timeouts",
    ]
