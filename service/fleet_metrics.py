"""The fleet's state for Prometheus, read from the database when /metrics is scraped.

The queue, the running jobs, the workers' heartbeats and the jobs that finished lately are
facts of the database, which every API process shares: read at scrape time, they are the same
whichever replica answers, need no process to have seen an event, and cannot drift after a
restart. Each is a gauge (a level now), never a counter: jobs get deleted, so a count of them
may fall.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from service.clock import database_now
from service.storage.db import Database, retry_transient
from service.storage.models import TERMINAL_STATUSES, Job, JobStatus, WorkerRecord

# Job durations describe the jobs that finished within this window, the newest of them at most.
RECENT_SECONDS = 3600.0
RECENT_JOBS_READ = 10_000
QUANTILES = (0.5, 0.9, 0.99, 1.0)


@dataclass(frozen=True)
class FleetSnapshot:
    jobs_by_status: dict[str, int]
    running_by_device: dict[str, int]
    heartbeat_ages: list[tuple[str, str, float]]  # worker id, hostname, seconds since seen
    recent_durations: dict[str, list[float]]  # terminal status -> seconds from start to end


@retry_transient
def read_fleet(db: Database, lease_seconds: float) -> FleetSnapshot:
    """One read transaction: every figure of a scrape describes the same moment."""
    with db.read() as session:
        jobs_by_status = dict.fromkeys((s.value for s in JobStatus), 0)
        for status, count in session.execute(select(Job.status, func.count()).group_by(Job.status)):
            jobs_by_status[status] = count
        running_by_device = {
            device or "unplaced": count
            for device, count in session.execute(
                select(Job.device, func.count())
                .where(Job.status == JobStatus.RUNNING)
                .group_by(Job.device)
            )
        }
        now = session.scalar(select(database_now()))
        workers = session.execute(
            select(WorkerRecord.id, WorkerRecord.hostname, WorkerRecord.last_seen_at)
            .where(WorkerRecord.last_seen_at >= database_now(-lease_seconds))
            .order_by(WorkerRecord.id)
        ).all()
        finished = session.execute(
            select(Job.status, Job.started_at, Job.finished_at)
            .where(
                Job.finished_at >= database_now(-RECENT_SECONDS),
                Job.status.in_(TERMINAL_STATUSES),
                Job.started_at.is_not(None),
            )
            .order_by(Job.finished_at.desc())
            .limit(RECENT_JOBS_READ)
        ).all()
    assert now is not None
    recent: dict[str, list[float]] = {}
    for status, started, ended in finished:
        assert started is not None and ended is not None  # the query's conditions
        recent.setdefault(status, []).append(max(0.0, seconds_between(started, ended)))
    return FleetSnapshot(
        jobs_by_status=jobs_by_status,
        running_by_device=running_by_device,
        heartbeat_ages=[
            (w.id, w.hostname, max(0.0, seconds_between(w.last_seen_at, now))) for w in workers
        ],
        recent_durations=recent,
    )


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


class FleetCollector(Collector):
    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot
        jobs = GaugeMetricFamily(
            "service_jobs",
            "Jobs in the database, by status (queued: the queue depth).",
            labels=["status"],
        )
        for status, count in sorted(snap.jobs_by_status.items()):
            jobs.add_metric([status], count)
        yield jobs
        running = GaugeMetricFamily(
            "service_jobs_running",
            "Running jobs, by the device they train on.",
            labels=["device"],
        )
        for device, count in sorted(snap.running_by_device.items()):
            running.add_metric([device], count)
        yield running
        yield GaugeMetricFamily(
            "service_workers_live",
            "Workers that sent a heartbeat within a lease.",
            value=len(snap.heartbeat_ages),
        )
        ages = GaugeMetricFamily(
            "service_worker_heartbeat_age_seconds",
            "Seconds since each live worker's last heartbeat (database clock).",
            labels=["worker", "hostname"],
        )
        for worker, hostname, age in snap.heartbeat_ages:
            ages.add_metric([worker, hostname], age)
        yield ages
        durations = GaugeMetricFamily(
            "service_recent_job_duration_seconds",
            f"Seconds from start to end of the jobs that finished in the last "
            f"{RECENT_SECONDS:.0f} s, as quantiles (1 is the longest), by final status.",
            labels=["status", "quantile"],
        )
        finished = GaugeMetricFamily(
            "service_recent_jobs_finished",
            f"Jobs that finished in the last {RECENT_SECONDS:.0f} s, by final status.",
            labels=["status"],
        )
        for status, seconds in sorted(snap.recent_durations.items()):
            finished.add_metric([status], len(seconds))
            for q, value in zip(QUANTILES, np.quantile(seconds, QUANTILES), strict=True):
                durations.add_metric([status, str(q)], float(value))
        yield durations
        yield finished


def fleet_exposition(db: Database, lease_seconds: float) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(read_fleet(db, lease_seconds)))
    return generate_latest(registry)
