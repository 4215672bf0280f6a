"""What an idle worker costs, and how soon it starts a job: the CPU one `python -m service
worker` burns while nothing is queued (utime + stime from /proc, in % of one core), and queue
pickup (`started_at - created_at`, the server's own clocks) of tiny jobs submitted one at a time.

    .venv/bin/python -m bench.idle                      # SQLite and PostgreSQL, poll 0.02 s and
                                                        # the default, 20 s idle, 20 jobs each
    .venv/bin/python -m bench.idle --backend sqlite --poll 0.02 --seconds 20 --jobs 20

The API and the worker run as separate processes (`api` + `worker`), so the worker's pid is
measured alone. PostgreSQL runs on a fresh database made on the server at --postgres-url (or
SERVICE_BENCH_POSTGRES_URL) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import jobs
from bench.postgres import POSTGRES_URL, scratch_postgres
from bench.procs import Managed, free_port, running, wait_http
from bench.settings import LOG_DIR, REPO
from bench.stats import median, percentile

FINAL = ("succeeded", "failed", "cancelled")
# After the warm-up job, before the idle window: the worker's own start-up work is done.
SETTLE_SECONDS = 3.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process `pid` has used so far, its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces or ')': the fields after the last ')' start at field 3.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def cpu_percent(pid: int, seconds: float) -> float:
    """The share of one core `pid` used over the next `seconds`, in percent."""
    before, start = process_cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    used, elapsed = process_cpu_seconds(pid) - before, time.monotonic() - start
    return 100.0 * used / elapsed


@dataclass(frozen=True)
class Figures:
    backend: str
    poll_seconds: float | None  # None: the service's default
    idle_cpu_percent: float
    pickup_ms: list[float]

    def line(self) -> str:
        poll = "default" if self.poll_seconds is None else f"{self.poll_seconds:g} s"
        return (
            f"{self.backend:<10} poll {poll:<8} idle worker CPU {self.idle_cpu_percent:5.2f}% "
            f"of a core; pickup p50 {median(self.pickup_ms):6.1f} ms, "
            f"p90 {percentile(self.pickup_ms, 90):6.1f} ms, max {max(self.pickup_ms):6.1f} ms "
            f"({len(self.pickup_ms)} jobs)"
        )


def _ms_between(start: str, end: str) -> float:
    delta = datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
    return delta.total_seconds() * 1e3


def _finished(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/jobs/{job_id}").raise_for_status().json()
        if job["status"] in FINAL:
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id} {job['status']}: {job.get('error')}")
            return job
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} not finished after {timeout:.0f} s")


def _submit(client: httpx.Client, seed: int, epochs: int = 1) -> str:
    response = client.post("/jobs", json=jobs.tiny_job(seed=seed, epochs=epochs))
    response.raise_for_status()
    job_id: str = response.json()["id"]
    return job_id


def pickup_ms(client: httpx.Client, n_jobs: int) -> list[float]:
    """Submit → started of `n_jobs` tiny jobs, one at a time to an idle worker, at random
    phases of its poll (seeded gaps, so runs compare)."""
    gaps = random.Random(0)
    waits = []
    for i in range(n_jobs):
        time.sleep(gaps.uniform(0.2, 0.4))
        job = _finished(client, _submit(client, seed=i))
        waits.append(_ms_between(str(job["created_at"]), str(job["started_at"])))
    return waits


@contextlib.contextmanager
def database(backend: str, postgres_url: str) -> Iterator[tuple[str, str]]:
    """(database URL, the service's data folder) for one measurement, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="bench-idle-")
    try:
        if backend == "sqlite":
            yield f"sqlite:///{folder}/service.db", f"{folder}/data"
        else:
            with scratch_postgres(postgres_url, "bench_idle") as url:
                yield url, f"{folder}/data"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def service_env(database_url: str, data_dir: str, poll_seconds: float | None) -> dict[str, str]:
    # A developer's own SERVICE_* settings must not change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(
        SERVICE_DATABASE_URL=database_url,
        SERVICE_DATA_DIR=data_dir,
        SERVICE_DEVICE="cpu",
        SERVICE_MAX_ACTIVE_JOBS_PER_KEY="100000",
        PYTHONUNBUFFERED="1",
    )
    if poll_seconds is not None:
        env["SERVICE_POLL_SECONDS"] = str(poll_seconds)
    return env


@contextlib.contextmanager
def api_and_worker(label: str, env: Mapping[str, str]) -> Iterator[tuple[httpx.Client, Managed]]:
    """`migrate`, then `api` and one `worker` as separate processes; a client of the API."""
    command = [sys.executable, "-m", "service"]
    subprocess.run([*command, "migrate"], cwd=REPO, env=dict(env), check=True)
    port = free_port()
    api_env = {**env, "SERVICE_PORT": str(port)}
    with (
        running(
            "api",
            [*command, "api"],
            cwd=REPO,
            env=api_env,
            log_path=LOG_DIR / f"idle-{label}-api.log",
        ) as api,
        running(
            "worker",
            [*command, "worker"],
            cwd=REPO,
            env=env,
            log_path=LOG_DIR / f"idle-{label}-worker.log",
        ) as worker,
    ):
        url = f"http://127.0.0.1:{port}"
        wait_http(api, f"{url}/healthz", timeout=120)
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client, worker


def measure(
    backend: str, poll_seconds: float | None, seconds: float, n_jobs: int, postgres_url: str
) -> Figures:
    label = f"{backend}-{poll_seconds or 'default'}"
    with (
        database(backend, postgres_url) as (url, data_dir),
        api_and_worker(label, service_env(url, data_dir, poll_seconds)) as (client, worker),
    ):
        _finished(client, _submit(client, seed=999, epochs=5))  # warm-up: the worker is ready
        time.sleep(SETTLE_SECONDS)
        idle = cpu_percent(worker.pid, seconds)
        waits = pickup_ms(client, n_jobs)
    return Figures(backend, poll_seconds, idle, waits)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument(
        "--poll", action="append", type=float, help="SERVICE_POLL_SECONDS (default: 0.02 and unset)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="idle window")
    parser.add_argument("--jobs", type=int, default=20, help="pickup jobs")
    parser.add_argument(
        "--postgres-url",
        default=POSTGRES_URL,
        help="a server where a scratch database may be created",
    )
    args = parser.parse_args(argv)
    polls: list[float | None] = list(args.poll) if args.poll else [0.02, None]
    for backend in args.backend or ["sqlite", "postgresql"]:
        for poll in polls:
            print(measure(backend, poll, args.seconds, args.jobs, args.postgres_url).line())


if __name__ == "__main__":
    main()
