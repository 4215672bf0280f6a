"""A job's loss history as /loss and the loss plots read it: a page of epochs, or the page
thinned to a number of points that keep the curve's shape.

Thinning happens in the database, so a million-epoch history never comes into memory: the
page's epochs are cut into equal buckets and from each the rows holding its lowest and highest
train loss (and validation loss, when there is one) are kept. Every point returned is a real
epoch with its real values, spikes and plateaus survive, and the answer holds at most
`max_points` epochs whatever the history's length (about a second per million epochs on
SQLite).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Row, case, cast, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.storage.models import LossRecord

LossRow = Row[tuple[int, float, float | None, float]]  # epoch, train, validation, seconds
# Epochs read back per statement: well within every database's cap on bound parameters.
EPOCHS_PER_READ = 5000


@dataclass(frozen=True)
class LossPage:
    rows: Sequence[LossRow]
    next_from_epoch: int | None  # where the following page starts; None at the end


def _columns() -> tuple[InstrumentedAttribute[Any], ...]:
    return (LossRecord.epoch, LossRecord.train_loss, LossRecord.val_loss, LossRecord.seconds)


def read_loss_page(
    session: Session, job_id: str, from_epoch: int, limit: int | None, max_points: int | None
) -> LossPage:
    """Epochs from `from_epoch` on, `limit` of them at most (None: all the rest); with
    `max_points`, thinned to that many points at most."""
    in_job = (LossRecord.job_id == job_id, LossRecord.epoch >= from_epoch)
    if max_points is None:
        assert limit is not None
        rows = session.execute(
            select(*_columns()).where(*in_job).order_by(LossRecord.epoch).limit(limit + 1)
        ).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return LossPage(rows, rows[-1].epoch + 1 if more else None)
    window = list(in_job)
    next_from = None
    if limit is not None:
        next_from = session.scalar(
            select(LossRecord.epoch)
            .where(*in_job)
            .order_by(LossRecord.epoch)
            .offset(limit)
            .limit(1)
        )
        if next_from is not None:
            window.append(LossRecord.epoch < next_from)
    count, first, last, validated = session.execute(
        select(
            func.count(),
            func.min(LossRecord.epoch),
            func.max(LossRecord.epoch),
            func.count(LossRecord.val_loss),
        ).where(*window)
    ).one()
    if count <= max_points:
        epochs = None
    else:
        epochs = _extreme_epochs(session, window, first, last, max_points, bool(validated))
    return LossPage(_rows(session, job_id, window, epochs), next_from)


def _rows(
    session: Session, job_id: str, window: list[ColumnElement[bool]], epochs: list[int] | None
) -> list[LossRow]:
    """The window's rows, or only those of `epochs` (a few at a time: databases cap the
    parameters of one statement)."""
    if epochs is None:
        return list(session.execute(select(*_columns()).where(*window).order_by(LossRecord.epoch)))
    rows: list[LossRow] = []
    for start in range(0, len(epochs), EPOCHS_PER_READ):
        chunk = epochs[start : start + EPOCHS_PER_READ]
        rows += session.execute(
            select(*_columns())
            .where(LossRecord.job_id == job_id, LossRecord.epoch.in_(chunk))
            .order_by(LossRecord.epoch)
        )
    return rows


def _extreme_epochs(
    session: Session,
    window: list[ColumnElement[bool]],
    first: int,
    last: int,
    max_points: int,
    validated: bool,
) -> list[int]:
    """The epochs holding each bucket's extremes, oldest first: two grouped passes over the
    window (each bucket's lowest and highest losses; then the first epoch with each), no sort
    of the history."""
    losses = [LossRecord.train_loss, *([LossRecord.val_loss] if validated else [])]
    buckets = max(1, max_points // (2 * len(losses)))
    # BigInteger: epoch x buckets passes 2^31 on long histories, and PostgreSQL's integer
    # arithmetic raises on overflow. Both operands are integers, so // divides as integers.
    bucket = ((cast(LossRecord.epoch, BigInteger) - first) * buckets // (last - first + 1)).label(
        "bucket"
    )
    extremes = select(
        bucket,
        *(func.min(loss).label(f"low_{i}") for i, loss in enumerate(losses)),
        *(func.max(loss).label(f"high_{i}") for i, loss in enumerate(losses)),
    )
    limits = extremes.where(*window).group_by(bucket).subquery()
    rows = select(LossRecord.epoch, *losses, bucket).where(*window).subquery()
    at_extreme = [
        rows.c[loss.key] == limits.c[f"{end}_{i}"]
        for i, loss in enumerate(losses)
        for end in ("low", "high")
    ]
    picks = (
        select(*(func.min(case((hit, rows.c.epoch))) for hit in at_extreme))
        .join_from(rows, limits, limits.c.bucket == rows.c.bucket)
        .where(or_(*at_extreme))
        .group_by(rows.c.bucket)
    )
    return sorted({epoch for row in session.execute(picks) for epoch in row if epoch is not None})
