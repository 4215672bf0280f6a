"""Where things are, and how much work each row does (full run or `--quick`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
LOG_DIR = OUT_DIR / "logs"


def baselines_dir() -> Path:
    """BASELINES_DIR, else ../shared/baselines beside the repo: baselines are run where they are."""
    configured = os.environ.get("BASELINES_DIR")
    path = Path(configured) if configured else REPO.parent / "shared" / "baselines"
    return path.resolve()


# Row keys accepted by --only; names are aliases for the numbers in the brief.
ROW_ALIASES: dict[str, str] = {
    "1": "1", "training": "1", "sinc": "1",
    "2": "2", "pickup": "2",
    "3": "3", "predict1": "3",
    "4": "4", "predict1000": "4",
    "5": "5", "models": "5",
    "6": "6", "scaling": "6",
    "7": "7", "fleet": "7",
    "8": "8", "datasets": "8",
    "9": "9", "sweeps": "9",
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    reps: int  # row 1: repetitions of the service job and of each baseline
    load_seconds: float  # rows 3-4: duration of one hey run
    load_reps: int  # rows 3-4: hey runs per server, interleaved
    pickup_jobs: int  # row 2
    models: int  # row 5
    scaling_rows: tuple[tuple[int, int], ...]  # row 6: (rows, epochs)
    predict_sizes: tuple[tuple[int, int], ...]  # row 6: (rows per request, requests)
    fleet_jobs: int  # row 7: tiny jobs per throughput batch (each worker count, each backend)
    fleet_rounds: int  # row 7: batches per worker count, in rotating order (median taken)
    fleet_claim_jobs: int  # row 7: the deep queue the claim probe runs against
    fleet_idle_seconds: float  # row 7: how long an idle worker's CPU is watched
    dataset_rows: int  # row 8: rows of the uploaded CSV
    dataset_reps: int  # row 8: measured uploads (and submits)
    rows: frozenset[str]  # which rows to run


FULL = Options(
    reps=5,
    load_seconds=10.0,
    load_reps=2,
    pickup_jobs=20,
    models=100,
    # Same number of batches (~5,000) per size: per-epoch time is what compares.
    scaling_rows=((2_500, 400), (25_000, 40), (250_000, 4)),
    predict_sizes=((1, 200), (100, 100), (10_000, 20)),
    fleet_jobs=80,
    fleet_rounds=3,
    fleet_claim_jobs=240,
    fleet_idle_seconds=10.0,
    dataset_rows=1_000_000,
    dataset_reps=3,
    rows=frozenset("123456789"),
)

QUICK = Options(
    reps=2,
    load_seconds=3.0,
    load_reps=1,
    pickup_jobs=10,
    models=30,
    scaling_rows=((2_500, 100), (25_000, 10)),
    predict_sizes=((1, 50), (100, 30), (10_000, 5)),
    fleet_jobs=40,
    fleet_rounds=1,
    fleet_claim_jobs=80,
    fleet_idle_seconds=4.0,
    dataset_rows=1_000_000,
    dataset_reps=1,
    rows=frozenset("123456789"),
)
