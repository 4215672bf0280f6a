"""What the tests read of live processes from /proc: who is whose child, who is still alive,
how much memory one holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from tests.support import ServiceProcess


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name; None once the pid is gone."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    return stat.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has exited


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


def memory(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status in bytes: VmRSS (now), VmHWM (the peak)..."""
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def only_worker(server: ServiceProcess) -> int:
    """The pid of the one worker a `serve` with one worker runs."""
    assert server.process is not None
    serve_pid = server.process.pid
    wait_for(lambda: len(children(serve_pid)) == 1, 30, "serve's one worker")
    (worker,) = children(serve_pid)
    return worker
