"""What each API process counts for Prometheus: requests, predict latency, predictor cache hits
and the micro-batcher's batch sizes.

These are events only the process that saw them knows of, so they live in the process. With
several API processes on one host, set PROMETHEUS_MULTIPROC_DIR (an empty directory, the same
for all of them, before they start): prometheus-client then keeps every value in a file there
and any process's /metrics adds them all up. What the database knows (queue depth, running
jobs, worker heartbeats, job durations) is read from it at scrape time instead
(service/fleet_metrics.py), so every replica reports the same fleet-wide figures.

Only counters and histograms live here: they sum across processes without the liveness
bookkeeping that multiprocess gauges need.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.process_collector import ProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

PROCESS = CollectorRegistry()

REQUESTS = Counter(
    "service_http_requests",
    "HTTP requests answered, by route template and status code.",
    ("route", "status"),
    registry=PROCESS,
)
PREDICT_LATENCY = Histogram(
    "service_predict_latency_seconds",
    "Time from a predict request's arrival to its answer, by route template.",
    ("route",),
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
    registry=PROCESS,
)
PREDICTOR_CACHE = Counter(
    "service_predictor_cache_lookups",
    "Predictor cache lookups: a hit is served from memory, a miss loads the model from storage.",
    ("result",),
    registry=PROCESS,
)
CACHE_HIT = PREDICTOR_CACHE.labels("hit")
CACHE_MISS = PREDICTOR_CACHE.labels("miss")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
BATCH_REQUESTS = Histogram(
    "service_predict_batch_requests",
    "Predict requests stacked into one forward pass by the micro-batcher.",
    buckets=BATCH_BUCKETS,
    registry=PROCESS,
)
BATCH_ROWS = Histogram(
    "service_predict_batch_rows",
    "Input rows of one micro-batched forward pass.",
    buckets=BATCH_BUCKETS,
    registry=PROCESS,
)

# CPU and memory of this process; meaningless summed over processes, so single-process only.
_PROCESS_ONLY = CollectorRegistry()
ProcessCollector(registry=_PROCESS_ONLY)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROCESS_DIR_ENV) or None


def process_exposition() -> bytes:
    """The text exposition of what this process (or, in multiprocess mode, every process
    sharing the directory) has counted."""
    if multiprocess_dir() is None:
        return generate_latest(PROCESS) + generate_latest(_PROCESS_ONLY)
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
    return generate_latest(merged)
