"""The fleet: live worker processes, the devices each trains on and the job each is training
(an operator's view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service import fleet
from service.api.deps import DatabaseDep, PrincipalDep, SettingsDep
from service.errors import Forbidden
from service.schemas import ErrorOut, WorkerJobOut, WorkerList, WorkerOut

router = APIRouter(prefix="/workers", tags=["workers"])

FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "Only admin keys see the fleet"}
}


def worker_out(member: fleet.Member) -> WorkerOut:
    worker, job = member.worker, member.job
    return WorkerOut(
        id=worker.id,
        hostname=worker.hostname,
        pid=worker.pid,
        devices=worker.devices,
        engine=worker.engine,
        started_at=worker.started_at,
        last_seen_at=worker.last_seen_at,
        current_job=None
        if job is None
        else WorkerJobOut(id=job.id, epoch=job.epoch, epochs=job.epochs, started_at=job.started_at),
    )


@router.get("", responses=FORBIDDEN)
def list_workers(db: DatabaseDep, settings: SettingsDep, principal: PrincipalDep) -> WorkerList:
    """Workers seen within a lease, oldest first: each one's host, pid and devices, its last
    heartbeat and the job it is training. Admin keys only: the jobs belong to every owner."""
    if not principal.admin:
        raise Forbidden("listing workers needs an admin key (SERVICE_ADMIN_KEYS)")
    return WorkerList(workers=[worker_out(m) for m in fleet.roster(db, settings.lease_seconds)])
