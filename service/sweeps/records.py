"""Reading sweeps: a sweep's row with its trials, summarised (status, counts, best trial).

Nothing here writes: a sweep is created, cancelled and deleted by the queue
(service/storage/queue.py), which owns every change to jobs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import NotFound
from service.storage.models import ACTIVE_STATUSES, Job, JobStatus, Sweep
from service.sweeps.schemas import SweepOut, SweepStatus, SweepSummary, TrialOut

# The columns a summary reads of each trial: never its data or spec.
TRIAL_COLUMNS = (
    Job.id,
    Job.sweep_id,
    Job.trial_params,
    Job.status,
    Job.epoch,
    Job.epochs,
    Job.train_loss,
    Job.val_loss,
    Job.error,
    Job.created_at,
)


def sweep_or_404(session: Session, sweep_id: str, owner: str | None) -> Sweep:
    """The sweep; another owner's is reported as not found (its existence is not theirs)."""
    sweep = session.get(Sweep, sweep_id)
    if sweep is None or (owner is not None and sweep.owner != owner):
        raise NotFound(f"no sweep with id {sweep_id}")
    return sweep


def trials_of(session: Session, sweep_ids: Sequence[str]) -> dict[str, list[TrialOut]]:
    """Each sweep's trials, in the order they were drawn."""
    rows = session.execute(
        select(*TRIAL_COLUMNS).where(Job.sweep_id.in_(sweep_ids)).order_by(Job.created_at, Job.id)
    ).all()
    trials: dict[str, list[TrialOut]] = {sweep_id: [] for sweep_id in sweep_ids}
    for row in rows:
        trials[row.sweep_id].append(
            TrialOut(
                id=row.id,
                params=row.trial_params or {},
                status=row.status,
                epoch=row.epoch,
                epochs=row.epochs,
                train_loss=row.train_loss,
                val_loss=row.val_loss,
                error=row.error,
            )
        )
    return trials


def sweep_status(sweep: Sweep, counts: Counter[str]) -> SweepStatus:
    active = sum(counts[status] for status in ACTIVE_STATUSES)
    if active:
        return "queued" if counts[JobStatus.QUEUED] == sum(counts.values()) else "running"
    if sweep.cancel_requested:
        return "cancelled"
    if counts[JobStatus.SUCCEEDED]:
        return "succeeded"
    return "cancelled" if counts[JobStatus.CANCELLED] == sum(counts.values()) else "failed"


def best_trial(trials: Sequence[TrialOut]) -> tuple[TrialOut | None, str | None]:
    """The succeeded trial with the lowest final validation loss, or training loss when the
    trials have no validation split; ties go to the earlier trial."""
    done = [t for t in trials if t.status == JobStatus.SUCCEEDED]
    by = "val_loss" if any(t.val_loss is not None for t in done) else "train_loss"
    scored = [(getattr(t, by), i, t) for i, t in enumerate(done)]
    finite = [(loss, i, t) for loss, i, t in scored if loss is not None and math.isfinite(loss)]
    if not finite:
        return None, None
    return min(finite, key=lambda entry: (entry[0], entry[1]))[2], by


def summary(sweep: Sweep, trials: Sequence[TrialOut]) -> SweepSummary:
    counts = Counter(str(t.status) for t in trials)
    best, by = best_trial(trials)
    return SweepSummary(
        id=sweep.id,
        name=sweep.name,
        status=sweep_status(sweep, counts),
        n_trials=sweep.n_trials,
        counts={status.value: counts[status.value] for status in JobStatus},
        best=best,
        best_by=by,  # type: ignore[arg-type]
        search=sweep.search,
        created_at=sweep.created_at,
    )


def sweep_out(session: Session, sweep: Sweep) -> SweepOut:
    trials = trials_of(session, [sweep.id])[sweep.id]
    return SweepOut(**summary(sweep, trials).model_dump(), trials=trials)


def list_sweeps(
    session: Session, owner: str | None, limit: int, offset: int
) -> tuple[list[SweepSummary], int]:
    conditions = [] if owner is None else [Sweep.owner == owner]
    total = session.scalar(select(func.count()).select_from(Sweep).where(*conditions)) or 0
    sweeps = session.scalars(
        select(Sweep)
        .where(*conditions)
        .order_by(Sweep.created_at.desc(), Sweep.id.desc())
        .limit(limit)
        .offset(offset)
    ).all()
    trials = trials_of(session, [s.id for s in sweeps])
    return [summary(s, trials[s.id]) for s in sweeps], total
