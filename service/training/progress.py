"""A running job's writes: its loss rows and checkpoints, in batches, guarded by its lease.

Every write goes through queue functions guarded by the lease, so a worker that lost its
lease (frozen, partitioned) writes nothing once another worker has the job.
"""

from __future__ import annotations

import time

from service.config import Settings
from service.loss_history import EpochResult
from service.storage import queue
from service.storage.db import Database
from service.storage.store import encode_checkpoint
from service.training.checkpoint import Checkpoint
from service.training.lease import Interrupt


class FlushClock:
    """When the loss rows of one job, or of a whole stack of trials, were last written: a
    stack's writers flush together, in one transaction, instead of one each."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.writers: list[ProgressWriter] = []


class ProgressWriter:
    """Buffers epoch rows; writes them in batches at most `flush_seconds` apart, and with
    each checkpoint, so stored loss rows and the stored checkpoint always agree. Writers that
    share a FlushClock (a stack's trials) write all their rows in one transaction."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        job_id: str,
        worker_id: str,
        interrupt: Interrupt,
        clock: FlushClock | None = None,
    ) -> None:
        self._db, self._job_id, self._worker_id = db, job_id, worker_id
        self._settings = settings
        self._interrupt = interrupt
        self.pending: list[EpochResult] = []
        self._clock = clock or FlushClock()
        self._clock.writers.append(self)
        self._last_checkpoint = time.monotonic()

    def __call__(self, result: EpochResult) -> None:
        self.pending.append(result)
        if time.monotonic() - self._clock.last >= self._settings.loss_flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the pending rows of every writer on this clock, in one transaction."""
        writers = {w._job_id: w for w in self._clock.writers if w.pending}
        lost = queue.record_progress_of(
            self._db, self._worker_id, {job_id: w.take() for job_id, w in writers.items()}
        )
        for job_id in lost:
            writers[job_id]._interrupt.set("lease_lost")
        self._clock.last = time.monotonic()

    def checkpoint_due(self, _epoch: int) -> bool:
        elapsed = time.monotonic() - self._last_checkpoint
        return elapsed >= self._settings.checkpoint_seconds

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        if not queue.save_checkpoint(
            self._db,
            self._job_id,
            self._worker_id,
            self.take(),
            checkpoint.epoch,
            encode_checkpoint(*checkpoint.to_tensors()),
        ):
            self._interrupt.set("lease_lost")
        self._last_checkpoint = time.monotonic()

    def take(self) -> list[EpochResult]:
        rows, self.pending = self.pending, []
        return rows
