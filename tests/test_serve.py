"""`serve`'s worker pool: N workers on a machine with several GPUs get one GPU each."""

from __future__ import annotations

import os

from service.config import Settings
from service.worker_pool import worker_env


def test_auto_workers_spread_over_the_gpus_round_robin() -> None:
    settings = Settings(device="auto", workers=3)
    gpus = ["0", "1"]
    assert [worker_env(settings, slot, gpus)["CUDA_VISIBLE_DEVICES"] for slot in range(3)] == [
        "0",
        "1",
        "0",
    ]


def test_one_gpu_none_or_a_forced_device_leaves_the_visible_gpus_alone() -> None:
    for settings, gpus in (
        (Settings(device="auto"), ["0"]),
        (Settings(device="auto"), []),
        (Settings(device="cuda:1"), ["0", "1"]),
    ):
        env = worker_env(settings, 1, gpus)
        assert env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")
        assert env["SERVICE_DEVICE"] == settings.device
