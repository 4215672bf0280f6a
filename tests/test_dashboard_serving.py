"""The dashboard's page and files load without an API key; nothing else is opened by them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_asgi_app
from service.api.routes.dashboard import STATIC_DIR
from service.config import Settings
from service.storage.db import Database

KEY = "dashboard-test-key"


@pytest.fixture
def keyed(settings: Settings, db: Database, tmp_path: Path) -> Iterator[TestClient]:
    keyed_settings = settings.model_copy(
        update={"api_keys": KEY, "data_dir": str(tmp_path / "data")}
    )
    with TestClient(create_asgi_app(keyed_settings)) as client:
        yield client


def test_page_is_served_without_a_key(keyed: TestClient) -> None:
    page = keyed.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/dashboard/app.js">' in page.text
    # Revalidated on each load, so an upgrade never leaves a stale page behind.
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("name", "media_type"),
    [
        ("app.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ],
)
def test_static_files_are_served_without_a_key(
    keyed: TestClient, name: str, media_type: str
) -> None:
    response = keyed.get(f"/dashboard/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.content == (STATIC_DIR / name).read_bytes()


def test_every_module_the_page_imports_is_served(keyed: TestClient) -> None:
    for path in sorted(STATIC_DIR.glob("*.js")):
        assert keyed.get(f"/dashboard/{path.name}").status_code == 200, path.name


def test_unchanged_files_answer_not_modified(keyed: TestClient) -> None:
    first = keyed.get("/dashboard/app.js")
    again = keyed.get("/dashboard/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/missing.js",
        "/dashboard/app.py",
        "/dashboard/.hidden.js",
        "/dashboard/..%2Fapp.py",
    ],
)
def test_only_files_of_the_static_folder_are_served(keyed: TestClient, path: str) -> None:
    assert keyed.get(path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/jobs",
        "/models",
        "/workers",
        "/datasets",
        "/dashboard/../jobs",
        "/dashboard/x/../../jobs",
        "/dashboard/sub/app.js",
        "/dashboard/",
        "/dashboardx.js",
        "/index.html",
    ],
)
def test_api_routes_still_need_the_key(keyed: TestClient, path: str) -> None:
    response = keyed.get(path)
    assert response.status_code == 401, path
    assert response.json()["error"] == "unauthorized"


def test_the_dashboard_is_not_part_of_the_api_schema(keyed: TestClient) -> None:
    paths = keyed.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/dashboard")]
