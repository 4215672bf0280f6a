"""A running job's lease, and why it should stop: renewed by a heartbeat thread that also
notices a cancel request or a lost lease. The job's writes are progress.py's."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from service.config import Settings
from service.storage import queue
from service.storage.db import Database
from service.tuning import CANCEL_POLL_SECONDS

log = logging.getLogger("service.worker")

# A stop reason that ends the run at once; "shutdown" pauses it (see trainer.train).
STOPPING_REASONS = ("cancelled", "lease_lost")


@dataclass
class Interrupt:
    """Why training should end early. The trainer sees only the two events."""

    stop: threading.Event = field(default_factory=threading.Event)  # between batches
    pause: threading.Event = field(default_factory=threading.Event)  # at an epoch boundary
    reason: str | None = None

    def set(self, reason: str) -> None:
        # A cancel or a lost lease outranks a shutdown: the job must not be handed back then.
        if self.reason is None or self.reason == "shutdown":
            self.reason = reason
        (self.stop if reason in STOPPING_REASONS else self.pause).set()


class LeaseKeeper(threading.Thread):
    """Renews the leases of the jobs a worker trains (one, or a stack of a sweep's trials)
    every heartbeat, in one statement; interrupts a job on a cancel request or a lost lease."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        interrupts: dict[str, Interrupt],
        worker_id: str,
    ) -> None:
        first = next(iter(interrupts))
        super().__init__(name=f"lease-{first[:8]}", daemon=True)
        self._db, self._settings = db, settings
        self._interrupts, self._worker_id = interrupts, worker_id
        self._done = threading.Event()

    def run(self) -> None:
        heartbeat = self._settings.heartbeat_seconds
        next_beat = time.monotonic() + heartbeat
        job_ids = list(self._interrupts)
        while not self._done.wait(min(CANCEL_POLL_SECONDS, heartbeat)):
            try:
                if time.monotonic() < next_beat:
                    for job_id in queue.cancel_requested_among(self._db, job_ids):
                        self._interrupts[job_id].set("cancelled")
                    continue
                next_beat = time.monotonic() + heartbeat
                leases = queue.heartbeat_all(
                    self._db, job_ids, self._worker_id, self._settings.lease_seconds
                )
            except Exception:  # a missed beat is survivable: the lease outlasts several
                log.exception("heartbeat for job(s) %s failed", ", ".join(job_ids))
                continue
            for job_id, interrupt in self._interrupts.items():
                lease = leases.get(job_id)
                if lease is None:
                    interrupt.set("lease_lost")
                elif lease.cancel_requested:
                    interrupt.set("cancelled")

    def stop(self) -> None:
        self._done.set()
        self.join()
