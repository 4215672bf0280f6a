"""The fleet: live worker processes and the devices each trains on (an operator's view)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service import fleet
from service.api.deps import DatabaseDep, PrincipalDep, SettingsDep
from service.errors import Forbidden
from service.schemas import ErrorOut, WorkerList, WorkerOut

router = APIRouter(prefix="/workers", tags=["workers"])

FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut, "description": "Only admin keys see the fleet"}
}


@router.get("", responses=FORBIDDEN)
def list_workers(db: DatabaseDep, settings: SettingsDep, principal: PrincipalDep) -> WorkerList:
    """Workers seen within a lease, oldest first, with the devices each may train on."""
    if not principal.admin:
        raise Forbidden("listing workers needs an admin key (SERVICE_ADMIN_KEYS)")
    workers = fleet.live_workers(db, settings.lease_seconds)
    return WorkerList(workers=[WorkerOut.model_validate(w, from_attributes=True) for w in workers])
