"""Alembic environment: the URL comes from Settings (or the caller), the tables from the ORM."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

import service.storage.models  # noqa: F401  (registers the tables on Base.metadata)
from service.config import Settings
from service.storage.db import Base, make_engine

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

database_url = config.attributes.get("database_url") or Settings().database_url


def run_migrations() -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table by dropping the old copy. With foreign keys on,
                # that drop would cascade to every row that references it (models, loss
                # history): the pragma must be off, and it only changes outside a transaction.
                connection.connection.driver_connection.execute(  # type: ignore[union-attr]
                    "PRAGMA foreign_keys=OFF"
                )
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite cannot ALTER most things in place; batch mode copies the table.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:  # rolls the migration back
                        raise RuntimeError(f"migration left dangling references: {broken[:5]}")
    finally:
        engine.dispose()


run_migrations()
