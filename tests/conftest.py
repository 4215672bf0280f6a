from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.config import Settings
from service.storage.db import Database
from service.storage.migrate import upgrade


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'service.db'}"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=str(tmp_path / "data"),
        heartbeat_seconds=0.5,
        lease_seconds=3,
        sweep_seconds=0.5,
        loss_flush_seconds=0.2,
        device="cpu",
    )


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    yield database
    database.dispose()


@pytest.fixture
def client(settings: Settings, db: Database) -> Iterator[TestClient]:
    """The app in-process (as the server runs it): for request validation and error shapes."""
    with TestClient(create_asgi_app(settings)) as test_client:
        yield test_client
