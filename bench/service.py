"""Our service as the bench sees it: `python -m service serve --workers 1` and an HTTP client."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Managed, free_port, running, wait_http
from bench.settings import LOG_DIR, REPO

JSON = {"Content-Type": "application/json"}
FINAL = ("succeeded", "failed", "cancelled")


class Rejected(Exception):
    """The API refused a request (e.g. 413 for a body over its cap)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


@dataclass
class Service:
    process: Managed
    url: str
    client: httpx.Client

    def submit(self, body: bytes) -> str:
        response = self.client.post("/jobs", content=body, headers=JSON)
        if response.status_code != 202:
            raise Rejected(response.status_code, response.text[:300])
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.client.get(f"/jobs/{job_id}").raise_for_status().json()
        return job

    def wait(
        self,
        job_id: str,
        statuses: tuple[str, ...] = FINAL,
        poll: float = 0.01,
        timeout: float = 900,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} not {statuses} after {timeout:.0f} s")

    def train(self, body: bytes, poll: float = 0.05) -> dict[str, Any]:
        """Submit and wait; the finished job, or an error saying why it did not succeed."""
        job = self.wait(self.submit(body), poll=poll)
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
        return job

    def count(self, status: str) -> int:
        listing = self.client.get("/jobs", params={"status": status, "limit": 1})
        total: int = listing.raise_for_status().json()["total"]
        return total

    def rss_mb(self) -> float:
        """VmRSS of the serve process: `serve` runs the API in itself, workers are its children."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line in /proc status")


def body_limit_env(limit_bytes: int) -> dict[str, str]:
    """SERVICE_* overrides that raise a request-body cap, if the service has such a setting."""
    from service.config import Settings

    names = [name for name in Settings.model_fields if "body" in name]
    return {f"SERVICE_{name.upper()}": str(limit_bytes) for name in names}


@contextlib.contextmanager
def running_service(label: str, extra_env: Mapping[str, str] | None = None) -> Iterator[Service]:
    """A fresh service with its own SQLite file on a free port, ready (healthz 200) when yielded."""
    tmp = tempfile.mkdtemp(prefix=f"bench-{label}-")
    port = free_port()
    # A developer's own SERVICE_* settings must not change what the bench measures.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVICE_")}
    env.update(
        SERVICE_DATABASE_URL=f"sqlite:///{tmp}/service.db",
        SERVICE_HOST="127.0.0.1",
        SERVICE_PORT=str(port),
        SERVICE_DEVICE="cpu",
        SERVICE_DATA_DIR=f"{tmp}/data",
        # The bench queues jobs in bursts (row 5: a hundred at once); the per-key quota of
        # active jobs is a defence against abuse, not what these rows measure.
        SERVICE_MAX_ACTIVE_JOBS_PER_KEY="100000",
        PYTHONUNBUFFERED="1",
        **(extra_env or {}),
    )
    argv = [sys.executable, "-m", "service", "serve", "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    try:
        with running(
            f"service ({label})", argv, cwd=REPO, env=env, log_path=LOG_DIR / f"service-{label}.log"
        ) as process:
            wait_http(process, f"{url}/healthz", timeout=120)
            with httpx.Client(base_url=url, timeout=600) as client:
                yield Service(process, url, client)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
