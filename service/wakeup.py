"""Wake idle workers when a job is queued (placeholder: the wake-up helper fills this in)."""

from __future__ import annotations

from service.db import Database


def announce(db: Database) -> None:
    """Tell idle workers that a job is waiting. Best effort: their slow poll is the fallback."""
