"""Rows 7a-7i: the fleet. Queue throughput with 1, 2 and 4 workers on PostgreSQL (1 and 2 on
SQLite), `queue.claim` latency while four workers drain a deep queue, and the CPU one idle
worker burns.

Each backend gets a fresh database (a scratch PostgreSQL database, dropped afterwards, or a
temporary SQLite file), `python -m service migrate`, one `api` process and one worker pool
(`python -m service worker --concurrency N`, N the largest count), started and stopped as
bench/procs.py does. The API and the workers are separate processes, so each worker's pid is
known and its CPU read alone.

Workers are taken in and out of the fleet by freezing them (SIGSTOP) while they are idle: a
frozen worker claims nothing and uses no CPU. A smaller count is that many of the pool's
workers with the rest frozen (one start-up per backend, not one per count: four torch workers
take seconds to start on two cores, a minute on a busy machine). Each batch is queued while its
workers are frozen too, then they are let go together, so all of them start on a full queue at
the same instant: neither the first worker to be ready nor the API's own submitting, which
shares the cores, decides the figure. Throughput is jobs / (first claim → last `succeeded`),
from the attempt records' server timestamps.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench import jobs
from bench.idle import cpu_percent, process_cpu_seconds
from bench.postgres import POSTGRES_URL, PostgresUnavailable, scratch_postgres
from bench.procs import Managed, free_port, running, wait_http
from bench.report import Row, Unit
from bench.service import Service
from bench.settings import LOG_DIR, REPO, Options
from bench.stats import median, percentile
from bench.targets import TARGETS
from service.storage import queue
from service.storage.db import Database
from service.storage.models import TERMINAL_STATUSES, AttemptRecord, Job, JobStatus, WorkerRecord

# A server where a scratch database may be created (the same variable bench/idle.py reads).

SERVICE = (sys.executable, "-m", "service")


JOBS_PER_MINUTE: Unit = "jobs/min"
PERCENT: Unit = "%"

EPOCHS = 5  # a few epochs of a 2→16→1 network on 64 rows: the queue's work, not training's
SUBMITTERS = 4  # concurrent POST /jobs while the workers are frozen: the queue fills sooner
# Starting four workers (each imports torch and warms up) on a busy 2-core machine has taken
# over a minute; a quiet one needs a few seconds.
READY_TIMEOUT_SECONDS = 300.0
DRAIN_TIMEOUT_SECONDS = 600.0
# After a batch, before an idle worker is measured: its last job's clean-up is over.
SETTLE_SECONDS = 2.0
# Between two probe claims: the probe is a fifth claimer, kept well below the workers' rate.
PROBE_GAP_SECONDS = 0.03
PROBE_WORKER = f"bench-claim-probe:{os.getpid()}"
UNLOADED_CLAIMS = 20  # probe claims while the workers are still frozen


class Unavailable(Exception):
    """The backend cannot be measured here (no server, no driver): its rows read skipped."""


@dataclass(frozen=True)
class Stack:
    backend: str
    url: str
    service: Service
    db: Database  # the bench's own connection: reads the rows, and the claim probe


@dataclass(frozen=True)
class Pool:
    process: Managed
    pids: list[int]  # the worker processes (a pool's supervisor is not one of them)


@dataclass(frozen=True)
class Drain:
    """One batch drained by `workers` workers; times in ms unless named otherwise."""

    backend: str
    workers: int
    jobs: int
    seconds: float  # first claim → last finish, server clocks
    queue_seconds: float  # how long the API took to queue the batch (client clock)
    busy_ms: list[float]  # each attempt: claimed → finished
    turnaround_ms: list[float]  # a worker's finish → its own next claim
    worker_cpu_s: float  # CPU time the workers used, all of them together
    database_cpu_s: float | None  # the PostgreSQL server processes serving this database
    machine_busy: float  # the share of all cores busy meanwhile (anything: API, PostgreSQL)
    claim_ms: list[float]  # the probe's claims that took a job (empty without the probe)
    unloaded_claim_ms: list[float]  # the same before the workers were let go

    @property
    def per_minute(self) -> float:
        return 60.0 * self.jobs / self.seconds

    def summary(self) -> str:
        cpu = f"workers {1e3 * self.worker_cpu_s / self.jobs:.1f} ms"
        if self.database_cpu_s is not None:
            cpu += f", PostgreSQL {1e3 * self.database_cpu_s / self.jobs:.1f} ms"
        return (
            f"{self.workers} worker(s): {self.jobs} jobs in {self.seconds:.2f} s; a job held its "
            f"worker {median(self.busy_ms):.1f} ms (median), finish → next claim "
            f"{median(self.turnaround_ms):.1f} ms; CPU a job: {cpu}; workers used "
            f"{self.worker_cpu_s / self.seconds:.2f} cores, all processes "
            f"{100 * self.machine_busy:.0f}% of the machine; the API queued the batch in "
            f"{self.queue_seconds:.2f} s"
        )


# -- databases and processes --


@contextlib.contextmanager
def scratch_database(backend: str, folder: str) -> Iterator[str]:
    """A new, empty database: a file in `folder`, or one on POSTGRES_URL's server, dropped
    afterwards (by then every process using it has been stopped)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}/service.db"
        return
    try:
        with scratch_postgres(POSTGRES_URL, "bench_fleet") as url:
            yield url
    except PostgresUnavailable as exc:
        raise Unavailable(str(exc)) from exc


def service_env(database_url: str, folder: str) -> dict[str, str]:
    # A developer's own SERVICE_* settings must not change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(
        SERVICE_DATABASE_URL=database_url,
        SERVICE_DATA_DIR=f"{folder}/data",
        SERVICE_DEVICE="cpu",
        SERVICE_HOST="127.0.0.1",
        # Whole batches are queued at once; the per-key quota is an abuse defence, not measured.
        SERVICE_MAX_ACTIVE_JOBS_PER_KEY="100000",
        PYTHONUNBUFFERED="1",
    )
    return env


def migrate(env: Mapping[str, str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        done = subprocess.run(
            [*SERVICE, "migrate"],
            cwd=REPO,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"migrate exited with {done.returncode}:\n{tail}")


@contextlib.contextmanager
def stack(backend: str, workers: int) -> Iterator[tuple[Stack, Pool]]:
    """A migrated scratch database, a ready `api` process on it and a pool of `workers`
    registered workers (`worker --concurrency N`). The API and the pool start side by side:
    the workers' start-up (torch, warm-up) is the longest wait of the whole group."""
    folder = tempfile.mkdtemp(prefix=f"bench-fleet-{backend}-")
    try:
        with scratch_database(backend, folder) as url:
            env = service_env(url, folder)
            migrate(env, LOG_DIR / f"fleet-{backend}-migrate.log")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            api_argv = [*SERVICE, "api"]
            pool_argv = [*SERVICE, "worker"]
            if workers > 1:  # one worker runs in the `worker` process itself
                pool_argv += ["--concurrency", str(workers)]
            db = Database(url)
            try:
                # Left in reverse order: the workers stop before the API.
                with (
                    running(f"api ({backend})", api_argv, cwd=REPO,
                            env={**env, "SERVICE_PORT": str(port)},
                            log_path=LOG_DIR / f"fleet-{backend}-api.log") as api,
                    running(f"{workers} worker(s) ({backend})", pool_argv, cwd=REPO, env=env,
                            log_path=LOG_DIR / f"fleet-{backend}-workers.log") as process,
                    httpx.Client(base_url=base, timeout=120) as client,
                ):  # fmt: skip
                    wait_http(api, f"{base}/healthz", timeout=120)
                    pool = Pool(process, wait_for_workers(db, process, workers))
                    yield Stack(backend, url, Service(api, base, client), db), pool
            finally:
                db.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _in_group(pid: int, pgid: int) -> bool:
    try:
        return os.getpgid(pid) == pgid
    except ProcessLookupError:
        return False


def wait_for_workers(db: Database, process: Managed, count: int) -> list[int]:
    """The pids of `count` workers of `process`'s group once each has registered, which a
    worker does after its warm-up and just before its first look at the queue."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited during start-up:\n{process.log_tail()}")
        with db.read() as session:
            registered = session.scalars(sa.select(WorkerRecord.pid)).all()
        pids = sorted(p for p in registered if p is not None and _in_group(p, process.pid))
        if len(pids) >= count:
            return pids
        time.sleep(0.2)
    raise TimeoutError(
        f"{process.name}: {count} workers not ready after {READY_TIMEOUT_SECONDS:.0f} s"
    )


def _sqlite_write_locked(url: str) -> bool:
    """True while some connection holds the SQLite file's write lock."""
    connection = sqlite3.connect(str(make_url(url).database), timeout=0, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        connection.close()


def _wait_stopped(pids: Sequence[int]) -> None:
    """Until each of `pids` is in the stopped state: SIGSTOP lands asynchronously."""
    deadline = time.monotonic() + 5.0
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                break
            if state in ("T", "t"):
                break
            time.sleep(0.001)


@contextlib.contextmanager
def frozen(fleet: Stack, pids: Sequence[int]) -> Iterator[None]:
    """These workers stopped (SIGSTOP) for the block and continued (SIGCONT) after it, whatever
    happens: a stopped process would ignore the SIGTERM of a clean stop. A frozen worker is out
    of the fleet: it claims nothing and uses no CPU.

    Only idle workers are frozen, and an idle worker's only writes are its heartbeats, which on
    PostgreSQL lock nothing another process needs. On SQLite a worker frozen inside one would
    hold the one write lock and stall everyone, so it is let go and frozen again until no lock
    is held."""

    def signal_all(sig: signal.Signals) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    try:
        for _ in range(50):
            signal_all(signal.SIGSTOP)
            _wait_stopped(pids)
            if not pids or fleet.backend != "sqlite" or not _sqlite_write_locked(fleet.url):
                break
            signal_all(signal.SIGCONT)
            time.sleep(0.02)
        else:
            raise RuntimeError("the frozen workers kept holding SQLite's write lock")
        yield
    finally:
        signal_all(signal.SIGCONT)


# -- measuring --


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat's first line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def cpu_readings(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each process in `pids` that still runs."""
    readings = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            readings[pid] = process_cpu_seconds(pid)
    return readings


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds used since `before` by its processes (one that exited meanwhile: none)."""
    after = cpu_readings(list(before))
    return sum(after[pid] - before[pid] for pid in after)


def database_server_pids(db: Database) -> list[int] | None:
    """The PostgreSQL server processes serving this database for the API and the workers, when
    the server runs on this machine (else None): their CPU is the database's share of a job.
    The bench's own connection is left out; the shared background processes are not counted."""
    if db.engine.dialect.name != "postgresql":
        return None
    with db.read() as session:
        pids = session.scalars(
            sa.text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()

    def local_postgres(pid: int) -> bool:
        # A pid of a server elsewhere may name any process here: only PostgreSQL's own count.
        try:
            return Path(f"/proc/{pid}/comm").read_text().startswith("postgres")
        except OSError:
            return False

    found = [int(pid) for pid in pids if local_postgres(int(pid))]
    return found if found else None


def submit_all(fleet: Stack, bodies: list[bytes]) -> list[str]:
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        return list(pool.map(fleet.service.submit, bodies))


def wait_all_final(db: Database, ids: list[str]) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    final = sa.select(sa.func.count()).where(Job.id.in_(ids), Job.status.in_(TERMINAL_STATUSES))
    while time.monotonic() < deadline:
        with db.read() as session:
            if session.scalar(final) == len(ids):
                return
        # The figures come from the server's timestamps, not from when this loop notices the
        # end: a slow look costs only a little of the CPU the workers and PostgreSQL share.
        time.sleep(0.1)
    raise TimeoutError(f"{len(ids)} jobs not finished after {DRAIN_TIMEOUT_SECONDS:.0f} s")


def probe_claims(db: Database, limit: int | None = None) -> list[float]:
    """`queue.claim` timed in this process until the queue is empty (or `limit` claims): ms
    per claim that took a job (a claim on an empty queue does less work). Each job taken is
    handed straight back with `queue.release`, which counts no attempt, and a worker runs it."""
    took: list[float] = []
    while (limit is None or len(took) < limit) and queue.has_queued(db):
        start = time.perf_counter()
        job_id = queue.claim(db, PROBE_WORKER, lease_seconds=60)
        elapsed = (time.perf_counter() - start) * 1e3
        if job_id is not None:
            took.append(elapsed)
            if not queue.release(db, job_id, PROBE_WORKER):
                raise RuntimeError(f"the claim probe could not hand job {job_id} back")
        time.sleep(PROBE_GAP_SECONDS)
    return took


def _ms(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() * 1e3


def drain(
    fleet: Stack, workers: Sequence[int], n_jobs: int, seed: int, probe: bool = False
) -> Drain:
    """Queue `n_jobs` tiny jobs while `workers` (pids) are frozen, let them go, and time how
    they drain the queue."""
    bodies = [jobs.encode(jobs.tiny_job(seed=seed + i, epochs=EPOCHS)) for i in range(n_jobs)]
    with frozen(fleet, workers):
        queue_start = time.monotonic()
        ids = submit_all(fleet, bodies)
        queue_seconds = time.monotonic() - queue_start
        # The same claims with nothing else running, on the same full queue: the reference.
        unloaded_claim_ms = probe_claims(fleet.db, limit=UNLOADED_CLAIMS) if probe else []
        workers_before = cpu_readings(list(workers))
        server_pids = database_server_pids(fleet.db)
        server_before = cpu_readings(server_pids) if server_pids is not None else None
        machine_before = machine_cpu_ticks()
    claim_ms = probe_claims(fleet.db) if probe else []
    wait_all_final(fleet.db, ids)
    worker_cpu = cpu_since(workers_before)
    server_cpu = cpu_since(server_before) if server_before is not None else None
    busy, total = (a - b for a, b in zip(machine_cpu_ticks(), machine_before, strict=True))
    with fleet.db.read() as session:
        failed = session.scalars(
            sa.select(Job.error).where(Job.id.in_(ids), Job.status != JobStatus.SUCCEEDED)
        ).all()
        attempts = session.execute(
            sa.select(AttemptRecord.worker_id, AttemptRecord.started_at, AttemptRecord.ended_at)
            .where(
                AttemptRecord.job_id.in_(ids),
                AttemptRecord.outcome == JobStatus.SUCCEEDED,
                AttemptRecord.worker_id != PROBE_WORKER,
            )
            .order_by(AttemptRecord.worker_id, AttemptRecord.started_at)
        ).all()
    if failed:
        raise RuntimeError(f"{len(failed)} of {n_jobs} jobs did not succeed: {failed[0]}")
    spans = [(a.worker_id, a.started_at, a.ended_at) for a in attempts if a.ended_at is not None]
    turnaround = [
        _ms(prev_end, start)
        for (prev_worker, _, prev_end), (worker, start, _) in itertools.pairwise(spans)
        if worker == prev_worker
    ]
    first, last = min(s for _, s, _ in spans), max(e for _, _, e in spans)
    return Drain(
        backend=fleet.backend,
        workers=len(workers),
        jobs=n_jobs,
        seconds=_ms(first, last) / 1e3,
        queue_seconds=queue_seconds,
        busy_ms=[_ms(s, e) for _, s, e in spans],
        turnaround_ms=turnaround,
        worker_cpu_s=worker_cpu,
        database_cpu_s=server_cpu,
        machine_busy=busy / total if total else 0.0,
        claim_ms=claim_ms,
        unloaded_claim_ms=unloaded_claim_ms,
    )


# -- the rows --


@dataclass
class Figures:
    drains: dict[int, list[Drain]]  # by worker count, one a round
    idle_percent: float | None = None
    claims: Drain | None = None  # the drain the claim probe ran against (PostgreSQL only)


# What each backend measures: (row, worker count) for throughput, the idle row, the claim rows.
THROUGHPUT: dict[str, tuple[tuple[str, int], ...]] = {
    "postgresql": (("7a", 1), ("7b", 2), ("7c", 4)),
    "sqlite": (("7d", 1), ("7e", 2)),
}
IDLE = {"postgresql": "7i", "sqlite": "7h"}
CLAIMS = {"postgresql": ("7f", "7g")}
LABEL = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}
WHAT = {
    "7a": "PostgreSQL: jobs/min, 1 worker",
    "7b": "PostgreSQL: jobs/min, 2 workers",
    "7c": "PostgreSQL: jobs/min, 4 workers",
    "7d": "SQLite: jobs/min, 1 worker",
    "7e": "SQLite: jobs/min, 2 workers",
    "7f": "claim latency p50, PostgreSQL, 4 workers draining a deep queue",
    "7g": "claim latency p99, PostgreSQL, 4 workers draining a deep queue",
    "7h": "idle worker CPU, SQLite, % of one core",
    "7i": "idle worker CPU, PostgreSQL, % of one core",
}


def measure(backend: str, options: Options, log: Callable[[str], None]) -> Figures:
    """One pool of the largest worker count; a smaller count is that many of its workers with
    the rest frozen, so the bench pays for one pool's start-up per backend, not one per count."""
    counts = [count for _, count in THROUGHPUT[backend]]
    figures = Figures(drains={count: [] for count in counts})
    with stack(backend, max(counts)) as (fleet, pool):
        # Untimed, two jobs a worker: a worker's first jobs pay one-off costs (lazy imports,
        # statement compilation) that a long-running fleet has long paid.
        drain(fleet, pool.pids, 2 * len(pool.pids), seed=1_000_000)
        seed = 0
        # Rounds in rotating order: a burst of other work on the machine lands on one drain of
        # one count, and the median of the rounds leaves it out.
        for round_ in range(options.fleet_rounds):
            for count in counts[round_ % len(counts) :] + counts[: round_ % len(counts)]:
                active, rest = pool.pids[:count], pool.pids[count:]
                with frozen(fleet, rest):
                    result = drain(fleet, active, options.fleet_jobs, seed)
                    seed += options.fleet_jobs
                    figures.drains[count].append(result)
                    log(f"[7] {backend}, {result.summary()}: {result.per_minute:,.0f} jobs/min")
                    if count == 1 and figures.idle_percent is None:
                        # The lone worker, idle now: wait out its last job's clean-up, watch.
                        time.sleep(SETTLE_SECONDS)
                        idle = cpu_percent(active[0], options.fleet_idle_seconds)
                        figures.idle_percent = idle
                        log(f"[7] {backend}, idle worker: {idle:.2f}% of a core")
        if backend in CLAIMS:
            claims = drain(fleet, pool.pids, options.fleet_claim_jobs, seed, probe=True)
            figures.claims = claims
            log(
                f"[7] {backend}, claim probe under load: {len(claims.claim_ms)} claims, "
                f"p50 {median(claims.claim_ms):.1f} ms, "
                f"p99 {percentile(claims.claim_ms, 99):.1f} ms"
            )
    return figures


def backend_rows(backend: str, figures: Figures, options: Options) -> list[Row]:
    rows = []
    rate = {
        count: median([d.per_minute for d in drains]) for count, drains in figures.drains.items()
    }
    for key, count in THROUGHPUT[backend]:
        drains = sorted(figures.drains[count], key=lambda d: d.per_minute)
        middle = drains[len(drains) // 2]  # the round whose details the note gives
        rounds = ", ".join(f"{d.per_minute:,.0f}" for d in figures.drains[count])
        note = f"{len(drains)} round(s): {rounds} jobs/min; median round: {middle.summary()}"
        samples = {
            "jobs_per_minute": [d.per_minute for d in figures.drains[count]],
            "busy_ms": middle.busy_ms,
            "turnaround_ms": middle.turnaround_ms,
        }
        row = Row(key, WHAT[key], JOBS_PER_MINUTE, rate[count], target=TARGETS.get(key),
                  note=note, samples=samples)  # fmt: skip
        if count > 1:
            row.baseline, row.baseline_name = rate[1], "(1 worker)"
        rows.append(row)
    if figures.claims is not None:
        claims, (p50, p99) = figures.claims, CLAIMS[backend]
        waits = claims.claim_ms
        note = (
            f"{len(waits)} probe claims (`queue.claim` timed in the bench process, each job "
            f"handed back at once) while {claims.workers} workers drained {claims.jobs} jobs "
            f"(unloaded, with the workers frozen: p50 {median(claims.unloaded_claim_ms):.1f} ms, "
            f"p99 {percentile(claims.unloaded_claim_ms, 99):.1f} ms); the workers' own "
            f"turnaround, finish → next claim (server clocks): "
            f"p50 {median(claims.turnaround_ms):.1f} ms, "
            f"p99 {percentile(claims.turnaround_ms, 99):.1f} ms"
        )
        rows.append(Row(p50, WHAT[p50], "ms", median(waits), note=note,
                        samples={"claim_ms": waits}))  # fmt: skip
        rows.append(Row(p99, WHAT[p99], "ms", percentile(waits, 99)))
    if figures.idle_percent is not None:
        key = IDLE[backend]
        note = (
            f"utime + stime of one worker process over {options.fleet_idle_seconds:g} s, from "
            f"{SETTLE_SECONDS:g} s after its last job (the pool's other workers frozen)"
        )
        rows.append(Row(key, WHAT[key], PERCENT, figures.idle_percent, target=TARGETS[key],
                        note=note))  # fmt: skip
    return rows


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    for backend in ("postgresql", "sqlite"):
        try:
            figures = measure(backend, options, log)
        except Unavailable as exc:
            log(f"[7] {LABEL[backend]} rows skipped: {exc}")
            keys = [k for k, _ in THROUGHPUT[backend]] + [IDLE[backend], *CLAIMS.get(backend, ())]
            rows += [Row(key, WHAT[key], "s", unavailable=str(exc)) for key in keys]
        else:
            rows += backend_rows(backend, figures, options)
    return sorted(rows, key=lambda row: row.key)
