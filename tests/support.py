"""Helpers shared by the tests: the sinc data, real service processes, polling."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.engine import make_url

from service.storage.db import Database
from service.storage.models import CheckpointRecord, Model
from service.training.data import TrainingTensors, prepare

REPO = Path(__file__).resolve().parent.parent
# Short queue timings so fault tests run in seconds; production keeps the defaults. Idle
# workers wake on a notification as in production (no short poll), so the tests exercise it.
FAST_QUEUE_ENV = {
    "SERVICE_HEARTBEAT_SECONDS": "0.5",
    "SERVICE_LEASE_SECONDS": "3",
    "SERVICE_SWEEP_SECONDS": "0.5",
    "SERVICE_LOSS_FLUSH_SECONDS": "0.2",
}


def sinc(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    r = np.sqrt(x1**2 + x2**2)
    return np.sin(r) / r


def grid(n: int) -> np.ndarray:
    """The notebook's n x n grid over [-10, 10]^2, as rows of (x1, x2)."""
    points = np.linspace(-10, 10, n)
    x1, x2 = np.meshgrid(points, points)
    return np.array([x1.flatten(), x2.flatten()]).T


def sinc_data(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    x = grid(n)
    return x, sinc(x[:, 0], x[:, 1]).reshape(-1, 1)


def sinc_job(epochs: int = 400, **training: Any) -> dict[str, Any]:
    x, y = sinc_data()
    return {
        "name": "sinc",
        "data": {"x": x.tolist(), "y": y.tolist()},
        "training": {"epochs": epochs, **training},
    }


def cpu_tensors(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classification: bool = False,
    scale_inputs: bool = True,
    scale_targets: bool = False,
    validation_fraction: float = 0.0,
    seed: int = 0,
) -> TrainingTensors:
    """A job's data prepared for training on the CPU, as the worker would prepare it."""
    return prepare(
        x,
        y,
        classification=classification,
        scale_inputs=scale_inputs,
        scale_targets=scale_targets,
        validation_fraction=validation_fraction,
        seed=seed,
        device=torch.device("cpu"),
    ).tensors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measuring_coverage() -> bool:
    """Whether this test run measures coverage (make test does)."""
    try:
        import coverage
    except ImportError:
        return False
    return coverage.Coverage.current() is not None


def service_command(command: str) -> list[str]:
    """The argv of `python -m service <command>`. Under coverage, `api` and `serve` run
    measured too (their data is combined with the test process's at the end): the HTTP layer
    and the process supervision run only there. Workers are left unmeasured, as tracing would
    slow training several times over."""
    if command in ("api", "serve") and measuring_coverage():
        return [
            sys.executable,
            "-m",
            "coverage",
            "run",
            "--parallel-mode",
            "-m",
            "service",
            command,
        ]
    return [sys.executable, "-m", "service", command]


class ServiceProcess:
    """`python -m service <command>` as a real child process with its own SQLite file."""

    def __init__(
        self,
        database_url: str,
        command: str = "serve",
        *,
        workers: int = 1,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.command = command
        self.port = free_port() if command in ("serve", "api") else 0
        self.workers = workers
        self.log_path = log_path
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The service's own folder (the owner secret): beside a SQLite database, so every
        process on one database shares a secret; never the repository's data/."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database:
            return Path(url.database).parent / "data"
        digest = hashlib.sha256(self.database_url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"service-data-{digest}"

    def start(self) -> ServiceProcess:
        env = {
            **os.environ,
            **FAST_QUEUE_ENV,
            "SERVICE_DATABASE_URL": self.database_url,
            "SERVICE_DATA_DIR": str(self.data_dir),
            "SERVICE_PORT": str(self.port),
            "SERVICE_WORKERS": str(self.workers),
            "SERVICE_DEVICE": "cpu",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        if self.log_path is not None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            service_command(self.command),
            cwd=REPO,
            env=env,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        if self.command in ("serve", "api"):
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"service did not become healthy\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; the exit code (a kill after the timeout raises)."""
        try:
            if self.process is None:
                return 0
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def wait_for_job(
    client: httpx.Client,
    job_id: str,
    statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    timeout: float = 120.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").raise_for_status().json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not reach {statuses}: {job}")


def checkpointed_epoch(database_url: str, job_id: str) -> int | None:
    """The epoch of the job's stored checkpoint, if it has one (read from the database)."""
    db = Database(database_url)
    try:
        with db.read() as session:
            return session.scalar(
                select(CheckpointRecord.epoch).where(CheckpointRecord.job_id == job_id)
            )
    finally:
        db.dispose()


def submit_job(client: httpx.Client, body: dict[str, Any]) -> str:
    """POST /jobs, which must accept the job; its id. (A TestClient is an httpx.Client.)"""
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def placeholder_model(job_id: str) -> Model:
    """A model row for queue-level tests, which store models but never load them."""
    return Model(
        id=job_id,
        task="regression",
        architecture={},
        weights=b"",
        scalers={},
        n_features=1,
        n_outputs=1,
        classes=None,
        metrics={},
    )
