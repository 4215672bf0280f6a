"""Row 2: queue pickup, submit → running on an idle worker, from the server's own timestamps."""

from __future__ import annotations

import datetime
import random
import time
from collections.abc import Callable

from bench import jobs
from bench.report import Row
from bench.service import running_service
from bench.settings import Options
from bench.stats import median, percentile
from bench.targets import TARGETS


def _ms_between(start: str, end: str) -> float:
    delta = datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
    return delta.total_seconds() * 1e3


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    waits: list[float] = []
    # Random gaps put each submit at a random phase of the worker's poll cycle (seeded: repeatable).
    gaps = random.Random(0)
    with running_service("pickup") as service:
        service.train(jobs.encode(jobs.tiny_job(seed=999)))  # warm-up
        for i in range(options.pickup_jobs):
            time.sleep(gaps.uniform(0.2, 0.4))
            job = service.wait(service.submit(jobs.encode(jobs.tiny_job(seed=i, epochs=1))))
            if job["status"] != "succeeded" or job["started_at"] is None:
                raise RuntimeError(f"pickup job {job['status']}: {job.get('error')}")
            waits.append(_ms_between(job["created_at"], job["started_at"]))
    log(f"[2] pickup over {len(waits)} jobs: p50 {median(waits):.1f} ms, max {max(waits):.1f} ms")
    return [
        Row("2", f"queue pickup p50, submit → running ({len(waits)} tiny jobs)", "ms",
            median(waits), target=TARGETS["2"],
            samples={"pickup_ms": waits},
            note=f"pickup from created_at → started_at: p90 {percentile(waits, 90):.1f} ms, "
                 f"max {max(waits):.1f} ms"),
    ]  # fmt: skip
