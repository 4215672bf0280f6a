"""How many torch threads a worker gives a job: one for small work, its share of the cores
for big CPU work, whatever the operator set when they set it."""

from __future__ import annotations

import math
import os

import pytest
import torch

from service.config import Settings
from service.storage.db import Database
from service.training.network import NetworkConfig
from service.training.worker import Worker
from service.tuning import SMALL_JOB_FLOPS

SMALL = NetworkConfig(2, (16,), 1, "tanh", "tanh")
BIG = NetworkConfig(64, (512, 512), 1, "relu", None)
CPU = torch.device("cpu")
CORES = 16


@pytest.fixture(autouse=True)
def sixteen_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    # A fixed core count, so the expected shares do not depend on the machine running the test.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(CORES)))


def worker(settings: Settings, db: Database, **changes: object) -> Worker:
    # torch_threads unset unless a test sets it, whatever the environment running the tests.
    return Worker(settings.model_copy(update={"torch_threads": None, **changes}), db)


def rows_at_threshold(config: NetworkConfig) -> int:
    """The fewest rows whose epoch (forward and backward) reaches SMALL_JOB_FLOPS."""
    return math.ceil(SMALL_JOB_FLOPS / (6 * config.n_parameters))


def test_a_small_job_gets_one_thread(settings: Settings, db: Database) -> None:
    assert worker(settings, db, workers=1)._threads_for(SMALL, 1000, CPU) == 1


def test_the_threshold_is_the_work_per_epoch(settings: Settings, db: Database) -> None:
    rows = rows_at_threshold(SMALL)
    pool_of_one = worker(settings, db, workers=1)
    assert pool_of_one._threads_for(SMALL, rows - 1, CPU) == 1
    assert pool_of_one._threads_for(SMALL, rows, CPU) == CORES


@pytest.mark.parametrize(("workers", "threads"), [(1, 16), (2, 8), (3, 5), (4, 4), (32, 1)])
def test_a_big_cpu_job_gets_its_worker_s_share_of_the_cores(
    settings: Settings, db: Database, workers: int, threads: int
) -> None:
    assert worker(settings, db, workers=workers)._threads_for(BIG, 100_000, CPU) == threads


@pytest.mark.parametrize(("config", "rows"), [(SMALL, 10), (BIG, 100_000)])
def test_an_explicit_thread_count_wins(
    settings: Settings, db: Database, config: NetworkConfig, rows: int
) -> None:
    pinned = worker(settings, db, workers=4, torch_threads=3)
    assert pinned._threads_for(config, rows, CPU) == 3
    assert pinned._threads_for(config, rows, torch.device("cuda")) == 3


def test_the_setting_comes_from_service_torch_threads(
    db: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SERVICE_TORCH_THREADS", "7")
    from_env = Worker(Settings(database_url=database_url, device="cpu"), db)
    assert from_env._threads_for(SMALL, 10, CPU) == 7


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_a_job_on_another_device_gets_one_thread(
    settings: Settings, db: Database, device: str
) -> None:
    # The CPU only feeds the device there; more threads would just contend with other workers.
    assert worker(settings, db, workers=1)._threads_for(BIG, 100_000, torch.device(device)) == 1
