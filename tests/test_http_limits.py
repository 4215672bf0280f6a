"""Each connection's bounds, against a real API process with small limits: a request head over
the limit gets 431 without the server holding it, a head or body that does not arrive in time
gets 408 and a close, an idle keep-alive connection is closed, and other clients are served
meanwhile. After each case the server answers a fresh connection and has logged no traceback.

Raw sockets, because HTTP clients will not send what these tests send.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.storage.migrate import upgrade
from tests.support import ServiceProcess

pytestmark = pytest.mark.e2e

HEAD_LIMIT = 4096
TIMEOUT = 1.0  # head, body and keep-alive alike
# How much after its deadline a close may come on a loaded machine.
SLACK = 2.0
LIMITS = {
    "SERVICE_MAX_HEADER_BYTES": str(HEAD_LIMIT),
    "SERVICE_HEADER_TIMEOUT_SECONDS": str(TIMEOUT),
    "SERVICE_BODY_TIMEOUT_SECONDS": str(TIMEOUT),
    "SERVICE_KEEP_ALIVE_SECONDS": str(TIMEOUT),
}
MIB = 1024 * 1024


def start_api(folder: Path, env: dict[str, str]) -> ServiceProcess:
    """`python -m service api` on a migrated database in `folder`, logging to folder/api.log."""
    url = f"sqlite:///{folder / 'service.db'}"
    upgrade(url)
    return ServiceProcess(url, "api", log_path=folder / "api.log", env=env).start()


def assert_healthy(server: ServiceProcess) -> None:
    """A normal request on a fresh connection is answered, and nothing crashed on the way."""
    assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
    assert server.log_path is not None
    assert "Traceback" not in server.log_path.read_text(errors="replace"), server.log_tail()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    server = start_api(tmp_path_factory.mktemp("http-limits"), LIMITS)
    yield server
    assert server.stop() == 0, server.log_tail()


@pytest.fixture(autouse=True)
def healthy_after(api: ServiceProcess) -> Iterator[None]:
    yield
    assert_healthy(api)


def connect(server: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def read_until_closed(sock: socket.socket, within: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took."""
    start = time.monotonic()
    received = b""
    sock.settimeout(within)
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open past {within} s; got {received!r}")
    return received, time.monotonic() - start


def trickle_until_closed(
    sock: socket.socket, pieces: Iterable[bytes], every: float, within: float
) -> bytes:
    """Send one piece every `every` seconds until the server closes; what it sent meanwhile."""
    received = b""
    deadline = time.monotonic() + within
    for piece in pieces:
        if time.monotonic() > deadline:
            pytest.fail(f"the server kept a trickling connection open past {within} s")
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return received
        if select.select([sock], [], [], every)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
    return received


class Responses:
    """Responses with a Content-Length, read one at a time from a connection that stays open
    (one read may hold the end of one and the start of the next)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _read_more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            pytest.fail(f"the server closed the connection; it had sent {self.buffer!r}")
        self.buffer += chunk

    def next(self) -> tuple[int, bytes]:
        """The next response's status and body."""
        while b"\r\n\r\n" not in self.buffer:
            self._read_more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(self.buffer) < length:
            self._read_more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head.split(b" ")[1]), body


def error_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of the one response in `raw`."""
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body)


def vm_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- request heads --


def test_a_head_over_the_limit_gets_431_and_a_close(api: ServiceProcess) -> None:
    sock = connect(api)
    with sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: ")
        # A megabyte of header in chunks, until the server answers or stops reading.
        for _ in range(64):
            try:
                sock.sendall(b"a" * 16 * 1024)
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([sock], [], [], 0)[0]:
                break
        received, _ = read_until_closed(sock, within=SLACK)
    status, body = error_of(received)
    assert status == 431
    assert body["error"] == "headers_too_large"
    assert str(HEAD_LIMIT) in body["detail"]


def test_a_head_just_under_the_limit_is_served(api: ServiceProcess) -> None:
    padding = "a" * (HEAD_LIMIT - 200)
    response = httpx.get(f"{api.url}/healthz", headers={"X-Padding": padding}, timeout=5)
    assert response.status_code == 200


def test_a_small_head_with_a_large_body_in_one_write_is_not_taken_for_a_large_head(
    api: ServiceProcess,
) -> None:
    body = b'{"name": "' + b"x" * 100_000 + b'"}'
    head = (
        b"POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    with connect(api) as sock:
        sock.sendall(head + body)
        status, answer = Responses(sock).next()
    assert status == 422, answer  # the body was read and judged, not refused as a head


def test_64_mb_of_head_is_cut_off_near_the_limit_without_memory_growth_or_stalls(
    api: ServiceProcess,
) -> None:
    assert api.process is not None
    rss_before = vm_rss_bytes(api.process.pid)
    sent_per_connection: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        """Connection after connection, each sending up to 64 MiB of one header."""
        chunk = b"a" * 256 * 1024
        while not stop.is_set():
            with connect(api) as sock:
                sent = 0
                try:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: ")
                    while sent < 64 * MIB:
                        sock.sendall(chunk)
                        sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                sent_per_connection.append(sent)

    flooder = threading.Thread(target=flood)
    flooder.start()
    latencies = []
    try:
        until = time.monotonic() + 1.5
        while time.monotonic() < until:
            started = time.monotonic()
            assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)
    finally:
        stop.set()
        flooder.join(timeout=30)
    assert not flooder.is_alive()
    assert sent_per_connection
    # The server stopped reading after the limit, its short linger and the socket buffers:
    # megabytes at most, never the 64 MiB the client meant to send.
    assert max(sent_per_connection) < 16 * MIB, sent_per_connection
    assert vm_rss_bytes(api.process.pid) - rss_before < 20 * MIB
    assert max(latencies) < 1.0, latencies


def test_a_pipelined_head_over_the_limit_is_refused_too(api: ServiceProcess) -> None:
    """A head that arrives in one read with the request before it is not counted as it
    arrives; it is measured once parsed."""
    small = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
    large = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 10_000 + b"\r\n\r\n"
    with connect(api) as sock:
        sock.sendall(small + large)
        received, _ = read_until_closed(sock, within=SLACK + 2)
    # The large one is never served (the small one may be abandoned with it).
    assert received.count(b"HTTP/1.1 200") <= 1, received


# -- timeouts --


def test_a_silent_connection_is_closed_after_the_header_timeout(api: ServiceProcess) -> None:
    started = time.monotonic()
    with connect(api) as sock:
        received, _ = read_until_closed(sock, within=TIMEOUT + SLACK)
    seconds = time.monotonic() - started
    status, body = error_of(received)
    assert (status, body["error"]) == (408, "request_timeout")
    assert TIMEOUT - 0.1 <= seconds <= TIMEOUT + SLACK


def test_a_head_trickled_a_line_at_a_time_is_cut_off_after_the_header_timeout(
    api: ServiceProcess,
) -> None:
    started = time.monotonic()
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        received = trickle_until_closed(
            sock, itertools.repeat(b"X-Slow: 1\r\n"), every=0.3, within=TIMEOUT + SLACK
        )
    seconds = time.monotonic() - started
    status, body = error_of(received)
    assert (status, body["error"]) == (408, "request_timeout")
    assert TIMEOUT - 0.1 <= seconds <= TIMEOUT + SLACK


def test_a_body_trickled_a_byte_at_a_time_is_cut_off_after_the_body_timeout(
    api: ServiceProcess,
) -> None:
    """The app is waiting in receive() for the body: it sees a disconnect and logs no error
    (checked after each test), and the client gets the 408."""
    with connect(api) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        started = time.monotonic()
        received = trickle_until_closed(
            sock, itertools.repeat(b" "), every=0.2, within=TIMEOUT + SLACK
        )
    seconds = time.monotonic() - started
    status, body = error_of(received)
    assert (status, body["error"]) == (408, "request_timeout")
    assert "body" in body["detail"]
    assert TIMEOUT - 0.1 <= seconds <= TIMEOUT + SLACK


def test_a_body_still_trickling_after_its_answer_is_cut_off_without_a_second_answer(
    api: ServiceProcess,
) -> None:
    """A declared body over the size limit is answered 413 before it is read; if it then
    trickles in, the body timeout closes the connection, and sends no 408 after the 413."""
    with connect(api) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n{" % (9 * MIB)
        )
        responses = Responses(sock)
        assert responses.next()[0] == 413
        rest = trickle_until_closed(sock, itertools.repeat(b" "), every=0.2, within=TIMEOUT + SLACK)
    assert responses.buffer + rest == b""


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_seconds(
    api: ServiceProcess,
) -> None:
    with connect(api) as sock:
        responses = Responses(sock)
        for _ in range(3):  # still a keep-alive connection after several requests
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            assert responses.next()[0] == 200
        rest, seconds = read_until_closed(sock, within=TIMEOUT + SLACK)
    assert rest == b""  # closed without a word: no request was pending
    assert TIMEOUT - 0.1 <= seconds <= TIMEOUT + SLACK


def test_pipelined_requests_are_answered_in_order(api: ServiceProcess) -> None:
    with connect(api) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n" * 3)
        responses = Responses(sock)
        assert [responses.next()[0] for _ in range(3)] == [200, 200, 200]


def test_an_upgrade_request_is_served_as_plain_http_without_warnings(api: ServiceProcess) -> None:
    """The API has no WebSockets: an Upgrade header is ignored rather than handing the
    connection to a protocol outside these bounds, and logs nothing."""
    with connect(api) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        responses = Responses(sock)
        assert responses.next()[0] == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")  # still HTTP
        assert responses.next()[0] == 200
    assert api.log_path is not None
    assert "upgrade" not in api.log_path.read_text().lower()
