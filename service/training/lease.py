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
    """Renews the lease every heartbeat; interrupts training on a cancel request or a lost lease."""

    def __init__(
        self, db: Database, settings: Settings, job_id: str, worker_id: str, interrupt: Interrupt
    ) -> None:
        super().__init__(name=f"lease-{job_id[:8]}", daemon=True)
        self._db, self._settings = db, settings
        self._job_id, self._worker_id = job_id, worker_id
        self._interrupt = interrupt
        self._done = threading.Event()

    def run(self) -> None:
        heartbeat = self._settings.heartbeat_seconds
        next_beat = time.monotonic() + heartbeat
        while not self._done.wait(min(CANCEL_POLL_SECONDS, heartbeat)):
            try:
                if time.monotonic() < next_beat:
                    if queue.is_cancel_requested(self._db, self._job_id):
                        self._interrupt.set("cancelled")
                    continue
                next_beat = time.monotonic() + heartbeat
                lease = queue.heartbeat(
                    self._db, self._job_id, self._worker_id, self._settings.lease_seconds
                )
            except Exception:  # a missed beat is survivable: the lease outlasts several
                log.exception("heartbeat for job %s failed", self._job_id)
                continue
            if lease is None:
                self._interrupt.set("lease_lost")
            elif lease.cancel_requested:
                self._interrupt.set("cancelled")

    def stop(self) -> None:
        self._done.set()
        self.join()
