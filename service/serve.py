"""`serve`: one command runs the migrations, the API and N worker processes beside it.

Workers are child processes (training never runs in the API process). A worker that dies is
restarted; on SIGTERM/SIGINT the API stops accepting requests and every worker gets SIGTERM,
hands its running job back to the queue and exits within the grace period.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import uvicorn

from service.api.app import create_asgi_app
from service.api.auth import KeyRing
from service.api.http_server import server_config
from service.config import Settings
from service.migrate import rekey_legacy_owners, upgrade
from service.process_guard import PARENT_PID_FLAG
from service.tuning import RESTART_BACKOFF_SECONDS, STOP_GRACE_SECONDS

log = logging.getLogger("service.serve")


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process the same settings as this one."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"SERVICE_{name.upper()}"] = str(value)
    return env


def worker_env(settings: Settings, slot: int, visible_gpus: list[str]) -> dict[str, str]:
    """The environment of worker number `slot`. With SERVICE_DEVICE=auto and several GPUs,
    each worker sees one of them (round robin), so N workers spread over the GPUs and each
    still places small jobs on the CPU."""
    env = settings_env(settings)
    if settings.device == "auto" and len(visible_gpus) > 1:
        env["CUDA_VISIBLE_DEVICES"] = visible_gpus[slot % len(visible_gpus)]
    return env


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    count = torch.cuda.device_count()
    named = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return named[:count] if named else [str(i) for i in range(count)]


class WorkerPool:
    """`serve`'s worker processes, all owned by one thread: it starts them, restarts any that
    die, and on stop() sends each SIGTERM and waits for it to hand its job back.

    One thread that outlives its workers, because each worker asks the kernel to SIGKILL it
    when the thread that forked it ends (service/process_guard.py). That is what takes the
    workers down with a SIGKILLed `serve`; forked from a thread that ended earlier (an old
    monitor, a request thread), a worker would be killed while `serve` still runs.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # None: not started yet, or its start failed (tried again on the next round).
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * settings.workers
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._run, name="worker-monitor", daemon=True)
        self._gpus = visible_gpus() if settings.device == "auto" else []

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


def serve(settings: Settings) -> None:
    upgrade(settings.database_url)
    rekey_legacy_owners(settings)
    pool = WorkerPool(settings)
    pool.start()
    try:
        run_api(settings)
    finally:
        pool.stop()


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def bind_address(settings: Settings) -> str:
    """Without API keys the API is open to anyone who can reach it: loopback only, then."""
    keys = KeyRing.from_settings(settings)
    if keys.enabled:
        log.info("authentication on: %s", keys.summary)
        return settings.host
    if settings.host not in LOOPBACK:
        log.warning(
            "no API keys (SERVICE_API_KEYS): the API is unauthenticated, so it binds to "
            "127.0.0.1 instead of %s",
            settings.host,
        )
        return "127.0.0.1"
    log.warning(
        "no API keys (SERVICE_API_KEYS): the API is unauthenticated, on %s only", settings.host
    )
    return settings.host


def run_api(settings: Settings) -> None:
    """Run the API in this process until SIGINT/SIGTERM (uvicorn handles both gracefully)."""
    app = create_asgi_app(settings)
    # Everything imported so far lives as long as the process: keep it out of the garbage
    # collector's scans, which otherwise show up as latency spikes under load.
    gc.collect()
    gc.freeze()
    config = server_config(app, settings, bind_address(settings))
    # uvicorn shuts down gracefully, restores the handlers it found and re-raises the signal.
    # Handlers that only log let the caller go on to stop the workers and exit cleanly.
    previous = {sig: signal.signal(sig, _note_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _note_signal(signum: int, _frame: object) -> None:
    log.info("stopping on signal %d", signum)
