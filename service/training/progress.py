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


class ProgressWriter:
    """Buffers epoch rows; writes them in batches at most `flush_seconds` apart, and with
    each checkpoint, so stored loss rows and the stored checkpoint always agree."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        job_id: str,
        worker_id: str,
        interrupt: Interrupt,
    ) -> None:
        self._db, self._job_id, self._worker_id = db, job_id, worker_id
        self._settings = settings
        self._interrupt = interrupt
        self.pending: list[EpochResult] = []
        self._last_flush = self._last_checkpoint = time.monotonic()

    def __call__(self, result: EpochResult) -> None:
        self.pending.append(result)
        if time.monotonic() - self._last_flush >= self._settings.loss_flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not queue.record_progress(self._db, self._job_id, self._worker_id, self.take()):
            self._interrupt.set("lease_lost")
        self._last_flush = time.monotonic()

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
        self._last_checkpoint = self._last_flush = time.monotonic()

    def take(self) -> list[EpochResult]:
        rows, self.pending = self.pending, []
        return rows
