"""A pool of worker processes under one supervisor: `serve` runs one beside its API, and
`python -m service worker --concurrency N` runs one on its own (a training box, one worker per
GPU).

The supervisor starts N `python -m service worker` children with its own settings, restarts any
that die, and on stop sends each SIGTERM, so each hands its running job back to the queue, and
waits for them. Children die with the supervisor even when it is SIGKILLed
(service/process_guard.py): an orphan would go on claiming jobs outside any supervision.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from service.config import Settings
from service.process_guard import PARENT_PID_FLAG
from service.tuning import RESTART_BACKOFF_SECONDS, STOP_GRACE_SECONDS

log = logging.getLogger("service.worker_pool")

# How often a supervisor without an API looks for a stop signal: the signal handler only sets a
# flag (anything more may deadlock on a lock the interrupted main thread holds).
SIGNAL_POLL_SECONDS = 0.2


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings as this one."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"SERVICE_{name.upper()}"] = str(value)
    return env


def worker_env(settings: Settings, slot: int, visible_gpus: list[str]) -> dict[str, str]:
    """The environment of worker number `slot`. With SERVICE_DEVICE auto or cuda (any GPU) and
    several GPUs, each worker sees one of them (round robin): N workers spread over the GPUs,
    one process per GPU when N is their number. An indexed device (cuda:1) pins every worker
    to that GPU, so the visible GPUs are left alone."""
    env = settings_env(settings)
    if settings.device in ("auto", "cuda") and len(visible_gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = visible_gpus[slot % len(visible_gpus)]
    return env


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES names them."""
    import torch  # only where a GPU may be handed out: a CPU pool never pays for it

    count = torch.cuda.device_count()
    named = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return named[:count] if named else [str(i) for i in range(count)]


class WorkerPool:
    """`count` worker processes, all owned by one thread: it starts them, restarts any that
    die, and on stop() sends each SIGTERM and waits for it to hand its job back.

    One thread that outlives its workers, because each worker asks the kernel to SIGKILL it
    when the thread that forked it ends (service/process_guard.py). That is what takes the
    workers down with a SIGKILLed supervisor; forked from a thread that ended earlier (an old
    monitor, a request thread), a worker would be killed while its supervisor still runs.
    """

    def __init__(self, settings: Settings, count: int) -> None:
        self._settings = settings
        # None: not started yet, or its start failed (tried again on the next round).
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._run, name="worker-monitor", daemon=True)
        self._gpus = visible_gpus() if settings.device in ("auto", "cuda") else []

    def start(self) -> None:
        self._monitor.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "service", "worker", PARENT_PID_FLAG, str(os.getpid())],
            env=worker_env(self._settings, slot, self._gpus),
        )

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._replace_exited()
                self._stopping.wait(RESTART_BACKOFF_SECONDS)
        finally:
            self._stop_all()

    def _replace_exited(self) -> None:
        for slot, process in enumerate(self._processes):
            if self._stopping.is_set():
                return
            if process is not None:
                code = process.poll()
                if code is None:
                    continue
                log.warning("worker pid %d exited with %s; restarting it", process.pid, code)
            try:
                self._processes[slot] = self._spawn(slot)
            except OSError:  # out of processes or memory for now: the next round tries again
                log.exception("could not start worker %d", slot)
                self._processes[slot] = None

    def _stop_all(self) -> None:
        running = [p for p in self._processes if p is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()


def supervise(settings: Settings, concurrency: int) -> None:
    """`python -m service worker --concurrency N`: run N workers until SIGTERM or SIGINT, then
    stop them all gracefully and return."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    pool = WorkerPool(settings, concurrency)
    pool.start()
    log.info("worker pool pid %d: %d workers on %s", os.getpid(), concurrency, settings.device)
    try:
        while not received:
            time.sleep(SIGNAL_POLL_SECONDS)
        log.info("signal %d: stopping %d workers", received[0], concurrency)
    finally:
        pool.stop()
    log.info("worker pool pid %d stopped", os.getpid())
