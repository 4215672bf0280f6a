"""Wake idle workers the moment a job is queued, instead of having them poll the database.

An idle worker blocks in `WakeUps.wait()` for at most its slow poll (SERVICE_POLL_SECONDS);
whoever puts a job in the queue calls `announce()`, which ends that wait at once:

- PostgreSQL: each worker holds one more connection, which LISTENs on CHANNEL; `announce()`
  runs pg_notify, which reaches every listening worker on every machine. A lost connection is
  reopened with backoff, and until then the slow poll carries on alone.
- SQLite (one host): each worker binds a unix datagram socket in `<database file>.wakeup/`,
  and `announce()` sends a byte to every socket there. A full socket buffer means that worker
  has a wake-up pending already; a socket nobody holds (a killed worker's) is removed.
- In-memory SQLite, or where neither can be set up: the slow poll only.

A wake-up is a hint, never a message: losing one costs at most one slow poll, so `announce()`
never raises, and a woken worker still asks the database whether there is a job for it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import secrets
import select
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import URL

from service.storage.db import Database

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("service.wakeup")

# One channel per database (NOTIFY never crosses databases), so services sharing a server
# do not wake each other.
CHANNEL = "service_job_queued"
# Reconnecting a lost listener: first after about this long, doubling up to the cap. Jittered,
# so a fleet that lost its database together does not come back in one burst.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 5
# An idle LISTEN connection sees no traffic: TCP keepalives notice a silently dead peer (a
# partition, a database host that vanished) within about idle + interval x count seconds.
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3
# sun_path holds 108 bytes, the last one the terminating NUL.
SOCKET_PATH_LIMIT = 107
SOCKETS_SUFFIX = ".wakeup"


class WakeUps:
    """The slow poll alone: `wait()` sleeps out its timeout unless `wake()` ends it. The
    listeners below add a source of wake-ups to the same wait."""

    def __init__(self) -> None:
        # A self-pipe: wake() may run in a signal handler or another thread, and a byte written
        # just before the wait begins still ends it (an Event could not share the poll).
        self._interrupt_read, self._interrupt_write = os.pipe()
        os.set_blocking(self._interrupt_read, False)
        os.set_blocking(self._interrupt_write, False)
        self._closed = False

    def wait(self, timeout: float) -> bool:
        """Block until woken (True) or until `timeout` seconds have passed (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._refresh():
                return True
            source = self._fileno()
            poll = select.poll()
            poll.register(self._interrupt_read, select.POLLIN)
            if source is not None:
                poll.register(source, select.POLLIN)
            remaining = min(deadline, self._next_refresh()) - time.monotonic()
            ready = {fd for fd, _ in poll.poll(max(0, math.ceil(remaining * 1000)))}
            if self._interrupt_read in ready:
                self._drain_interrupts()
                return True
            if source is not None and source in ready and self._receive():
                return True
            if time.monotonic() >= deadline:
                return False

    def wake(self) -> None:
        """End the current (or the next) wait at once: safe from a signal handler."""
        if self._closed:  # its descriptor numbers may belong to another file by now
            return
        with contextlib.suppress(BlockingIOError):  # a full pipe holds a wake-up already
            os.write(self._interrupt_write, b"\0")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.close(self._interrupt_read)
        os.close(self._interrupt_write)

    def _drain_interrupts(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._interrupt_read, 64):
                pass

    # What a listener adds to the wait.
    def _fileno(self) -> int | None:
        """The descriptor that becomes readable when a wake-up arrives; None: none now."""
        return None

    def _receive(self) -> bool:
        """Read what arrived on _fileno(); True when it held a wake-up."""
        return False

    def _refresh(self) -> bool:
        """Repair the source if it is due (a reconnect); True when the wait should end."""
        return False

    def _next_refresh(self) -> float:
        """When _refresh() next has work (time.monotonic()); inf when never."""
        return math.inf


def listen(db: Database) -> WakeUps:
    """The wake-ups of one worker on `db`; the slow poll alone where there can be none."""
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        return NotifyWakeUps(psycopg_conninfo(url))
    folder = sockets_folder(url)
    if folder is None:
        return WakeUps()
    try:
        return SocketWakeUps(folder)
    except OSError as exc:
        log.warning(
            "no wake-up socket in %s (%s): idle workers notice new jobs by polling only",
            folder,
            exc,
        )
        return WakeUps()


def announce(db: Database) -> None:
    """Tell idle workers that a job is waiting. Best effort: their slow poll is the fallback."""
    url = db.engine.url
    try:
        if url.get_backend_name() == "postgresql":
            with db.engine.begin() as connection:
                connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
            return
        folder = sockets_folder(url)
        if folder is not None:
            _send_to_sockets(folder)
    except Exception as exc:  # a lost wake-up costs one slow poll; a failed enqueue much more
        log.warning("could not wake idle workers (%s); they find the job by polling", exc)


# -- PostgreSQL: LISTEN/NOTIFY --


def psycopg_conninfo(url: URL) -> str:
    """The libpq URL of a SQLAlchemy one: the driver part dropped, the password kept."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class NotifyWakeUps(WakeUps):
    """A dedicated autocommit connection that LISTENs on CHANNEL."""

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._connection: psycopg.Connection[Any] | None = None
        self._backoff = 0.0
        self._retry_at = 0.0
        # Now, not at the first wait: a job queued between the worker's first look at the queue
        # and its LISTEN would otherwise wait out a whole slow poll.
        self._connect()

    def close(self) -> None:
        self._disconnect()
        super().close()

    def _connect(self) -> bool:
        import psycopg  # only PostgreSQL deployments need the driver loaded

        try:
            connection = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                keepalives=1,
                keepalives_idle=KEEPALIVE_IDLE_SECONDS,
                keepalives_interval=KEEPALIVE_INTERVAL_SECONDS,
                keepalives_count=KEEPALIVE_COUNT,
            )
        except psycopg.Error as exc:
            self._retry_later(exc)
            return False
        try:
            connection.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            connection.close()
            self._retry_later(exc)
            return False
        if self._backoff:
            log.info("listening for queued jobs again")
        self._connection, self._backoff = connection, 0.0
        return True

    def _retry_later(self, exc: Exception) -> None:
        self._backoff = min(RECONNECT_CAP_SECONDS, self._backoff * 2 or RECONNECT_FIRST_SECONDS)
        delay = self._backoff * random.uniform(0.5, 1.0)
        self._retry_at = time.monotonic() + delay
        log.warning(
            "cannot listen for queued jobs (%s); polling until it reconnects in %.1fs",
            " ".join(str(exc).split()),  # libpq's messages run over several lines
            delay,
        )

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # it may be broken already: nothing to save
                self._connection.close()
            self._connection = None

    def _fileno(self) -> int | None:
        return None if self._connection is None else self._connection.fileno()

    def _receive(self) -> bool:
        import psycopg

        assert self._connection is not None
        try:
            # timeout=0: take every notification that has arrived, and return.
            return bool(list(self._connection.notifies(timeout=0)))
        except psycopg.Error as exc:  # the server went away or ended this session
            self._disconnect()
            self._retry_later(exc)
            return False

    def _refresh(self) -> bool:
        # Announces sent while it was down are lost: once back, the worker should look.
        return self._connection is None and time.monotonic() >= self._retry_at and self._connect()

    def _next_refresh(self) -> float:
        return self._retry_at if self._connection is None else math.inf


# -- SQLite: datagram sockets beside the database file --


def sockets_folder(url: URL) -> Path | None:
    """Where a SQLite database's workers bind their wake-up sockets; None for another database
    or an in-memory one."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(f"{url.database}{SOCKETS_SUFFIX}")


def _socket_address(folder: Path, folder_fd: int, name: str) -> str:
    path = str(folder / name)
    if len(os.fsencode(path)) <= SOCKET_PATH_LIMIT:
        return path
    # A deep folder does not fit in sun_path: reach it through this process's open handle on
    # it, which Linux resolves like the folder itself (and the name stays short).
    return f"/proc/self/fd/{folder_fd}/{name}"


class SocketWakeUps(WakeUps):
    """A unix datagram socket of this worker's own in the database's wake-up folder."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        try:
            # 0700 whatever the umask: the folder's modes are what keep other users out.
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if stat.S_IMODE(folder.stat().st_mode) & 0o077:
                folder.chmod(0o700)
            self._folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            super().close()
            raise
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.setblocking(False)
            self._socket.bind(_socket_address(folder, self._folder_fd, self._name))
            os.chmod(self._name, 0o600, dir_fd=self._folder_fd)
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._socket.close()
        with contextlib.suppress(FileNotFoundError):  # an announce took it for a stale one
            os.unlink(self._name, dir_fd=self._folder_fd)
        os.close(self._folder_fd)
        super().close()

    def _fileno(self) -> int | None:
        return self._socket.fileno()

    def _receive(self) -> bool:
        woken = False
        with contextlib.suppress(BlockingIOError):
            while True:
                self._socket.recv(64)
                woken = True
        return woken


def _send_to_sockets(folder: Path) -> None:
    try:
        folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return  # no worker ever listened on this database
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for name in os.listdir(folder_fd):
                _send_one(sender, folder, folder_fd, name)
    finally:
        os.close(folder_fd)


def _send_one(sender: socket.socket, folder: Path, folder_fd: int, name: str) -> None:
    try:
        sender.sendto(b"\0", _socket_address(folder, folder_fd, name))
    except BlockingIOError:
        pass  # its buffer is full: that worker has wake-ups pending already
    except FileNotFoundError:
        pass  # its worker removed it since the folder was listed
    except ConnectionRefusedError:
        # Nobody holds it: its worker was killed before it could remove it.
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode):
                os.unlink(name, dir_fd=folder_fd)
                log.info("removed the wake-up socket %s of a worker that is gone", name)
