"""Row 6: how training time grows with rows, and predict latency with rows per request."""

from __future__ import annotations

import time
from collections.abc import Callable

from bench import jobs
from bench.report import Row
from bench.service import JSON, Rejected, Service, body_limit_env, running_service
from bench.settings import Options
from bench.stats import median

BODY_LIMIT_BYTES = 64 * 1024 * 1024  # ~6x the 250k-row job, used only if the service has a cap


def _train_row(service: Service, n_rows: int, epochs: int, log: Callable[[str], None]) -> Row:
    what = f"train {n_rows:,} rows × {epochs} epochs: time per epoch"
    body = jobs.encode(jobs.sinc_job(n_rows, epochs))
    start = time.perf_counter()
    try:
        job_id = service.submit(body)
    except Rejected as exc:
        if exc.status != 413:
            raise
        reason = f"{len(body) / 1e6:.1f} MB body refused with 413 and no body-limit setting"
        return Row(f"6-{n_rows}", what, "ms", unavailable=f"skipped: {reason}")
    job = service.wait(job_id, poll=0.05)
    total = time.perf_counter() - start
    if job["status"] != "succeeded":
        raise RuntimeError(f"{n_rows}-row job {job['status']}: {job.get('error')}")
    seconds = service.client.get(f"/models/{job_id}/loss").json().get("seconds") or []
    trained = seconds[-1] if seconds else total  # the loss history's clock: training only
    per_epoch = trained / epochs * 1e3
    log(f"[6] {n_rows} rows: {per_epoch:.1f} ms/epoch, submit → succeeded {total:.2f} s")
    return Row(f"6-{n_rows}", what, "ms", per_epoch,
               note=f"{n_rows:,} rows: {len(body) / 1e6:.1f} MB body, submit → succeeded "
                    f"{total:.2f} s, final loss {job['train_loss']:.5f}")  # fmt: skip


def _predict_row(service: Service, model_id: str, n_rows: int, count: int) -> Row:
    body = jobs.ours_predict_body(n_rows)
    url = f"/models/{model_id}/predict"
    times: list[float] = []
    for i in range(count + 3):
        start = time.perf_counter()
        service.client.post(url, content=body, headers=JSON).raise_for_status()
        if i >= 3:  # the first requests load the model and warm the path
            times.append((time.perf_counter() - start) * 1e3)
    what = f"predict {n_rows:,} row(s) per request, 1 client, median of {count}"
    return Row(f"6-p{n_rows}", what, "ms", median(times), samples={"ms": times})


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    limit_env = body_limit_env(BODY_LIMIT_BYTES)
    with running_service("scaling", limit_env) as service:
        # Trained first, it also waits out the worker's start-up (healthz is the API alone).
        model = service.train(jobs.encode(jobs.sinc_job(2_500, epochs=20)))
        for n_rows, epochs in options.scaling_rows:
            rows.append(_train_row(service, n_rows, epochs, log))
        for n_rows, count in options.predict_sizes:
            rows.append(_predict_row(service, model["id"], n_rows, count))
            log(f"[6] predict {n_rows} rows: {rows[-1].project:.2f} ms")
    if limit_env:
        # On the largest body's row: that is the request the raised cap is for.
        largest = rows[len(options.scaling_rows) - 1]
        largest.note += "; service started with " + ", ".join(
            f"{k}={v}" for k, v in limit_env.items()
        )
    return rows
