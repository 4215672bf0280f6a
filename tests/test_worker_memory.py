"""A worker gives a large job's memory back when the job ends: idle, it is about as small as it
was before the job, not as large as the job's peak."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.proc import memory, only_worker
from tests.support import ServiceProcess, submit_job, wait_for_job

pytestmark = pytest.mark.e2e

MiB = 1024**2
# What the worker may keep after the job: allocator bookkeeping, library code paths the job
# touched first. Measured here: about +10 MiB with the release, +350 to +470 MiB without.
MARGIN = 150 * MiB


def large_job() -> dict[str, Any]:
    """Two 2048-wide layers on 4000 rows in one batch: several hundred MB at its peak."""
    rng = np.random.default_rng(0)
    return {
        "data": {
            "x": rng.normal(size=(4000, 16)).round(3).tolist(),
            "y": rng.normal(size=(4000, 1)).round(3).tolist(),
        },
        "model": {"hidden_layers": [2048, 2048]},
        "training": {"epochs": 4, "batch_size": 4000},
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess(
        f"sqlite:///{tmp_path / 'service.db'}",
        workers=1,
        log_path=tmp_path / "serve.log",
        # Checkpoints as a long job writes them: blobs of weights and optimizer state, which
        # SQLite's statement cache would keep a copy of after the job.
        env={"SERVICE_CHECKPOINT_SECONDS": "0.2"},
    ).start()
    yield process
    assert process.stop() == 0, process.log_tail()


def test_an_idle_worker_returns_to_its_footprint_after_a_large_job(
    server: ServiceProcess,
) -> None:
    worker = only_worker(server)
    with httpx.Client(base_url=server.url, timeout=30) as api:
        deadline = time.monotonic() + 60
        while not api.get("/workers").json()["workers"]:  # warmed up, registered, idle
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.1)
        before = memory(worker, "VmRSS")
        job = wait_for_job(api, submit_job(api, large_job()), timeout=60)
    assert job["status"] == "succeeded", server.log_tail()
    peak = memory(worker, "VmHWM")
    assert peak - before > 2 * MARGIN  # the job was large enough to tell
    deadline = time.monotonic() + 5  # the release follows the job's last write
    while (after := memory(worker, "VmRSS")) - before > MARGIN and time.monotonic() < deadline:
        time.sleep(0.1)
    print(
        f"worker RSS: before {before / MiB:.0f} MiB, peak {peak / MiB:.0f}, after {after / MiB:.0f}"
    )
    assert after - before <= MARGIN
