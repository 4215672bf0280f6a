"""Alembic environment: the URL comes from Settings (or the caller), the tables from the ORM."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

import service.models  # noqa: F401  (registers the tables on Base.metadata)
from service.config import Settings
from service.db import Base, make_engine

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

database_url = config.attributes.get("database_url") or Settings().database_url


def run_migrations() -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                # SQLite cannot ALTER most things in place; batch mode copies the table.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations()
