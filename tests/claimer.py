"""Runs in spawned processes: imports only the queue, so each child starts in a blink."""

from __future__ import annotations

import multiprocessing
from multiprocessing.synchronize import Event

from service.storage import queue
from service.storage.db import Database


def claim_all(
    database_url: str, worker_id: str, start: Event, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    db = Database(database_url)
    start.wait()  # all claimers race from the same moment
    claimed = []
    while (job_id := queue.claim(db, worker_id, 30)) is not None:
        claimed.append(job_id)
    results.put(claimed)
    db.dispose()
