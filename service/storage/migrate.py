"""Bring the database up to date: the Alembic migrations in migrations/, then the data changes
that need the running configuration (API keys, the owner secret) and so cannot be migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, exists, func, select, update
from sqlalchemy.orm import aliased

from service.api.auth import ConfiguredKeys, legacy_owner_digest, owner_digest
from service.config import Settings
from service.owner_secret import load_owner_secret
from service.storage.db import Database
from service.storage.models import Job

log = logging.getLogger("service.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Passed as an attribute, not an option: configparser would mangle '%' in passwords.
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def rekey_legacy_owners(settings: Settings) -> int:
    """Move jobs recorded under the old unkeyed digest of a configured key to its HMAC digest,
    so their owner keeps seeing them; the number of jobs moved.

    Idempotent: a second run finds no legacy rows. Jobs of keys no longer configured keep the
    legacy digest (no key can match it now; admins still see them). A legacy job whose
    Idempotency-Key the same key already used under the new digest stays as it is, since
    moving it would break the one-job-per-key-and-idempotency-key rule.
    """
    configured = ConfiguredKeys.from_settings(settings)
    if not configured.keys:
        return 0
    secret = load_owner_secret(settings)
    twin = aliased(Job)
    moved = 0
    db = Database(settings.database_url)
    try:
        with db.write() as session:
            for key in configured.keys:
                current = owner_digest(secret, key)
                taken = exists().where(
                    twin.owner == current, twin.idempotency_key == Job.idempotency_key
                )
                statement = (
                    update(Job)
                    .where(Job.owner == legacy_owner_digest(key), ~taken)
                    .values(owner=current)
                    .execution_options(synchronize_session=False)
                )
                result = cast("CursorResult[Any]", session.execute(statement))
                moved += result.rowcount
            legacy = [legacy_owner_digest(key) for key in configured.keys]
            stuck = session.scalar(select(func.count()).where(Job.owner.in_(legacy)))
    finally:
        db.dispose()
    if moved:
        log.info("re-keyed %d job(s) from the legacy owner digest to the keyed one", moved)
    if stuck:
        log.warning(
            "%d job(s) keep the legacy owner digest: their key reused their Idempotency-Key "
            "since; only admin keys see them",
            stuck,
        )
    return moved
