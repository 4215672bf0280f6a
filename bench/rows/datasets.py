"""Row 8: a 1M-row CSV uploaded to a running service (POST /datasets), and a job submitted from
it: upload time, the API process's peak memory growth against the file's size, submit time.

The CSV (sinc data: x1, x2, two noise columns, y; 6 decimals, ~47 MB) is written to a temporary
folder and streamed from disk, as `curl --data-binary @file` would. Before the measured uploads
one tiny CSV is uploaded, which pays the one-off costs (pyarrow's code paged in, the parser's
first allocations) that no dataset size changes; the note gives that warm-up's own growth. Each
measured upload starts from a reset peak (`/proc/<pid>/clear_refs`), so its VmHWM is its own.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import jobs
from bench.report import Row
from bench.service import JSON, Service, running_service
from bench.settings import Options
from bench.stats import median
from bench.targets import TARGETS

CSV = {"Content-Type": "text/csv"}
TINY_CSV = b"x1,x2,noise1,noise2,y\n0.5,-1.0,0.1,0.2,0.3\n1.0,2.0,0.3,0.4,0.5\n"


def write_csv(path: Path, n_rows: int) -> None:
    """Sinc of two inputs plus two noise columns, in chunks so the bench stays small too."""
    rng = np.random.default_rng(0)
    with open(path, "w") as file:
        file.write("x1,x2,noise1,noise2,y\n")
        for start in range(0, n_rows, 100_000):
            count = min(100_000, n_rows - start)
            x, y = jobs.sinc_points(count, seed=start)
            noise = rng.normal(size=(count, 2))
            np.savetxt(file, np.hstack([x, noise, y]), fmt="%.6f", delimiter=",")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak since start, or since the last reset) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def reset_peak(pid: int) -> None:
    """Make VmHWM start again from the current RSS (Linux 4.0+; needs the same user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def upload(service: Service, path: Path) -> tuple[float, float, str]:
    """(seconds, peak growth in MB, dataset id) of one streamed upload."""
    pid = service.process.pid
    reset_peak(pid)
    before = memory_mb(pid)["VmRSS"]
    start = time.perf_counter()
    with open(path, "rb") as file:
        response = service.client.post("/datasets?target=y", content=file, headers=CSV)
    seconds = time.perf_counter() - start
    if response.status_code != 201:
        raise RuntimeError(f"upload refused: HTTP {response.status_code} {response.text[:300]}")
    return seconds, memory_mb(pid)["VmHWM"] - before, str(response.json()["id"])


def submit_ms(service: Service, dataset_id: str) -> float:
    body = jobs.encode({"dataset_id": dataset_id, "model": {"hidden_layers": [8]},
                        "training": {"epochs": 1}})  # fmt: skip
    start = time.perf_counter()
    job_id = service.submit(body)
    elapsed = (time.perf_counter() - start) * 1e3
    # Not what is measured: a 1M-row epoch would only slow the next upload down.
    service.client.post(f"/jobs/{job_id}/cancel", headers=JSON)
    service.wait(job_id, poll=0.05)
    return elapsed


def run(options: Options, log: Callable[[str], None]) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="bench-datasets-"))
    try:
        path = folder / "upload.csv"
        write_csv(path, options.dataset_rows)
        file_mb = path.stat().st_size / 1024**2
        log(f"[8] wrote a {options.dataset_rows:,}-row CSV of {file_mb:.1f} MB")
        with running_service("datasets") as service:
            healthy = memory_mb(service.process.pid)["VmRSS"]
            warm_up = service.client.post("/datasets?target=y", content=TINY_CSV, headers=CSV)
            warm_up.raise_for_status()
            warmed = memory_mb(service.process.pid)["VmHWM"]
            measured = [upload(service, path) for _ in range(options.dataset_reps)]
            after = memory_mb(service.process.pid)["VmRSS"]
            submits = [submit_ms(service, measured[-1][2]) for _ in range(options.dataset_reps)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = [m[0] for m in measured]
    growth = [m[1] for m in measured]
    log(f"[8] uploads {', '.join(f'{s:.2f}' for s in seconds)} s; peak growth "
        f"{', '.join(f'{g:.0f}' for g in growth)} MB; submits "
        f"{', '.join(f'{s:.1f}' for s in submits)} ms")  # fmt: skip
    what = f"{options.dataset_rows:,}-row × 5-column CSV ({file_mb:.0f} MB)"
    return [
        Row("8a", f"upload a {what}: POST /datasets → 201", "s", median(seconds),
            target=TARGETS["8a"], samples={"upload_s": seconds},
            note=f"{len(seconds)} uploads, streamed from disk; each {min(seconds):.2f}-"
                 f"{max(seconds):.2f} s"),
        Row("8b", "upload: API process peak memory growth vs the file's size", "MB",
            max(growth), baseline=file_mb, baseline_name="(the CSV's size)",
            target=TARGETS["8b"], samples={"peak_growth_mb": growth},
            note=f"the largest of {len(growth)} uploads' VmHWM − VmRSS before it "
                 f"({', '.join(f'{g:.0f}' for g in growth)} MB); the serve process had "
                 f"{healthy:.0f} MB when healthy, peaked at {warmed:.0f} MB over the tiny "
                 f"warm-up upload (pyarrow paged in), held {after:.0f} MB after the uploads"),
        Row("8c", "POST /jobs with the uploaded dataset's dataset_id", "ms", median(submits),
            target=TARGETS["8c"], samples={"submit_ms": submits},
            note="the job references the dataset (no copy of its bytes); checks from its "
                 "stored summary"),
    ]  # fmt: skip
