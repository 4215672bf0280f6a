"""Row 9: a sweep of 16 notebook jobs through POST /sweeps vs one of them through POST /jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench import baselines, jobs
from bench.report import Row
from bench.rows.training import timed_job
from bench.service import FINAL, Service, running_service
from bench.settings import Options
from bench.stats import median
from bench.targets import TARGETS

RATES = (0.003, 0.01, 0.03, 0.1)
SEEDS = (0, 1, 2, 3)


def sweep_body() -> bytes:
    grid = {"training.learning_rate": list(RATES), "training.seed": list(SEEDS)}
    return jobs.encode({"name": "bench-sweep", "base": jobs.notebook_job(), "grid": grid})


def timed_sweep(service: Service, body: bytes, poll: float = 0.01) -> tuple[float, dict[str, Any]]:
    """Client-side POST /sweeps → every trial ended (GET every ~10 ms); the finished sweep."""
    start = time.perf_counter()
    response = service.client.post(
        "/sweeps", content=body, headers={"Content-Type": "application/json"}
    )
    response.raise_for_status()
    sweep_id = response.json()["id"]
    while True:
        sweep: dict[str, Any] = service.client.get(f"/sweeps/{sweep_id}").raise_for_status().json()
        if sweep["status"] in FINAL:
            elapsed = time.perf_counter() - start
            break
        time.sleep(poll)
    if sweep["counts"]["succeeded"] != len(RATES) * len(SEEDS):
        raise RuntimeError(f"sweep {sweep_id}: {sweep['counts']}")
    return elapsed, sweep


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    one = jobs.encode(jobs.notebook_job())
    sweep = sweep_body()
    trial_s: list[float] = []
    sweep_s: list[float] = []
    sklearn_s: list[float] = []
    stacked: list[int] = []
    with running_service("sweeps") as service:
        service.train(jobs.encode(jobs.notebook_job(epochs=20)))  # warm-up: the worker is hot
        for rep in range(options.reps):
            steps: list[Callable[[], None]] = [
                lambda: trial_s.append(timed_job(service, one)[0]),
                lambda: _append_sweep(service, sweep, sweep_s, stacked),
                lambda: sklearn_s.append(baselines.train_seconds("sklearn_mlp.py")[0]),
            ]
            for step in steps[rep % 3 :] + steps[: rep % 3]:
                time.sleep(0.3)
                step()
            log(
                f"[9] rep {rep + 1}/{options.reps}: one trial {trial_s[-1]:.2f} s, 16-trial "
                f"sweep {sweep_s[-1]:.2f} s, sklearn fit {sklearn_s[-1]:.2f} s"
            )
    n = len(RATES) * len(SEEDS)
    what = f"{n} trials of the sinc job ({len(RATES)} learning rates × {len(SEEDS)} seeds), CPU"
    note = (
        f"{options.reps} reps, interleaved; POST /sweeps → all succeeded vs POST /jobs → "
        f"succeeded of one trial, HTTP client wall time; trials trained in stacks of "
        f"{sorted(set(stacked))}"
    )
    return [
        Row("9a", f"{what}: sweep vs one trial", "s", median(sweep_s), median(trial_s),
            "(one trial, POST /jobs)", TARGETS["9a"], samples={"sweep_s": sweep_s,
            "trial_s": trial_s}, note=note),
        Row("9b", f"{what}: sweep vs {n} scikit-learn fits", "s", median(sweep_s),
            n * median(sklearn_s), f"({n} × sklearn MLPRegressor fit)", TARGETS["9b"],
            samples={"sklearn_s": sklearn_s},
            note=f"the anchor pays {n}×: {n} × its median fit, measured in the same run"),
    ]  # fmt: skip


def _append_sweep(service: Service, body: bytes, times: list[float], stacked: list[int]) -> None:
    elapsed, sweep = timed_sweep(service, body)
    times.append(elapsed)
    first = sweep["trials"][0]["id"]
    model = service.client.get(f"/models/{first}").raise_for_status().json()
    stacked.append(int(model["metrics"]["stacked_trials"]))
