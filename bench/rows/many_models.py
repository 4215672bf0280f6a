"""Row 5: many distinct models predicted round-robin: cold latency and API memory growth."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import jobs
from bench.report import Row
from bench.service import JSON, Service, running_service
from bench.settings import Options
from bench.stats import median
from bench.targets import TARGETS

WARM_ROUNDS = 2


def _train_all(service: Service, count: int, log: Callable[[str], None]) -> list[str]:
    """Submit every job at once, then wait for the queue to drain."""
    ids = [service.submit(jobs.encode(jobs.tiny_job(seed=i))) for i in range(count)]
    deadline = time.monotonic() + 900
    while service.count("queued") + service.count("running") > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("tiny jobs did not finish in 15 min")
        time.sleep(0.2)
    failed = service.count("failed") + service.count("cancelled")
    if failed:
        raise RuntimeError(f"{failed} of {count} tiny jobs did not succeed")
    log(f"[5] trained {count} tiny models")
    return ids


def _predict_ms(service: Service, model_id: str, body: bytes) -> float:
    start = time.perf_counter()
    response = service.client.post(f"/models/{model_id}/predict", content=body, headers=JSON)
    elapsed = (time.perf_counter() - start) * 1e3
    response.raise_for_status()
    return elapsed


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    body = jobs.ours_predict_body(1)
    with running_service("models") as service:
        rss_start = service.rss_mb()
        ids = _train_all(service, options.models, log)
        time.sleep(1.0)  # let the API settle before the reference reading
        rss_before = service.rss_mb()
        cold = [_predict_ms(service, model_id, body) for model_id in ids]
        warm = [_predict_ms(service, m, body) for _ in range(WARM_ROUNDS) for m in ids]
        rss_after = service.rss_mb()
    growth = rss_after - rss_before
    log(f"[5] cold median {median(cold):.1f} ms, warm {median(warm):.1f} ms, RSS +{growth:.1f} MB")
    n = options.models
    return [
        Row("5a", f"{n} models round-robin: cold first predict", "ms", median(cold),
            target=TARGETS["5a"], samples={"cold_ms": cold},
            note=f"warm predicts after: median {median(warm):.1f} ms ({WARM_ROUNDS} rounds)"),
        Row("5b", f"{n} models: API process RSS growth", "MB", growth,
            target=TARGETS["5b"],
            note=f"VmRSS of the serve process: {rss_before:.0f} MB before the first predict → "
                 f"{rss_after:.0f} MB after {WARM_ROUNDS + 1} rounds ({rss_start:.0f} MB when "
                 f"first healthy)"),
    ]  # fmt: skip
