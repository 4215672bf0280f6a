"""The service's files (database, owner secret) are readable by its own user only: created that
way, and tightened at start-up when an older version left them open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.config import Settings
from service.file_modes import tighten_existing
from service.storage.migrate import upgrade
from tests.support import REPO, ServiceProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_service_creates_everything_private(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "db" / "service.db"
    data = tmp_path / "fresh" / "data"
    server = ServiceProcess(
        f"sqlite:///{database}",
        workers=0,
        log_path=tmp_path / "serve.log",
        env={"SERVICE_API_KEYS": "some-key", "SERVICE_DATA_DIR": str(data)},
    ).start()
    try:
        written = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
        for path in [*written, data / "owner_secret"]:
            assert mode(path) == 0o600, path
        for folder in (database.parent, data):
            assert mode(folder) == 0o700, folder
    finally:
        assert server.stop() == 0, server.log_tail()


def test_start_up_tightens_what_an_older_version_left_open(tmp_path: Path) -> None:
    folder, data = tmp_path / "shared-db", tmp_path / "data"
    database = folder / "service.db"
    folder.mkdir()
    upgrade(f"sqlite:///{database}")
    data.mkdir()
    (data / "owner_secret").write_text("0123456789abcdef\n")
    for path in (folder, data):
        path.chmod(0o755)
    for path in (database, data / "owner_secret"):
        path.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "service", "migrate"],
        cwd=REPO,
        env={
            **os.environ,
            "SERVICE_DATABASE_URL": f"sqlite:///{database}",
            "SERVICE_DATA_DIR": str(data),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert (mode(folder), mode(data)) == (0o700, 0o700)
    assert (mode(database), mode(data / "owner_secret")) == (0o600, 0o600)
    assert f"made {database} private: mode 644 -> 600" in result.stderr


def test_a_shared_folder_is_reported_not_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "tmp-like"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, world-writable: closing it would lock other users out
    settings = Settings(database_url=f"sqlite:///{shared / 'service.db'}", data_dir=str(shared))
    assert tighten_existing(settings) == []
    assert mode(shared) == 0o1777
    assert "shared, so it is left as it is" in caplog.text
