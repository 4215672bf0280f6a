"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service import __version__
from service.api.deps import DatabaseDep
from service.errors import DatabaseUnavailable
from service.schemas import ErrorOut, Health
from service.storage.db import Database

router = APIRouter(tags=["health"])


def check_database(db: Database) -> None:
    """DatabaseUnavailable (503) unless this process can reach the database: what readiness
    means here, for /healthz and the Open Inference Protocol's /v2/health/ready alike."""
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(f"the database cannot be reached: {type(exc).__name__}") from exc


@router.get("/healthz", responses={503: {"model": ErrorOut, "description": "Database unreachable"}})
def healthz(db: DatabaseDep) -> Health:
    """OK when this process can reach the database."""
    check_database(db)
    return Health(status="ok", database="ok", version=__version__)
