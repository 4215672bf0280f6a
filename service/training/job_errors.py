"""What a failed job tells its owner: a sentence, never the internals behind it.

The job's `error` is shown to whoever submitted it, so it must not carry SQL statements, their
parameters (a blob of weights, someone's data) or pages of text. The worker's log keeps the
full story for the operator.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from service.loss_history import EpochResult

# Long enough for any message of ours and the gist of a library's; short enough for a listing.
MAX_ERROR_CHARS = 500


class ModelNotStored(Exception):
    """The database refused the trained model. Carries the loss rows the refused transaction
    would have written, so the failed job keeps its history."""

    def __init__(self, weight_bytes: int, rows: Sequence[EpochResult]) -> None:
        super().__init__(
            f"the trained model could not be stored (its weights are {weight_bytes:,} bytes and "
            "the database refused them); a smaller network may fit. The operator's worker log "
            "has the details"
        )
        self.rows = list(rows)


DATABASE_FAILURE = (
    "the job could not be written to the database; the operator's worker log has the details"
)


def public_error(exc: BaseException) -> str:
    """The job's error for `exc`, fit to show to its owner."""
    if isinstance(exc, SQLAlchemyError):  # its text is the statement and its parameters
        return DATABASE_FAILURE
    return shorten(f"{type(exc).__name__}: {exc}")


def shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
