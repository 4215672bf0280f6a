"""The web dashboard: its page at `/` and its static files under `/dashboard/`.

Plain HTML, CSS and JavaScript modules with no build step, served from the package itself so
the service works offline. The files are tiny, so each is read once and kept in memory with an
ETag; browsers revalidate on every load (no stale page after an upgrade) and get a 304 when
nothing changed. Neither route appears in the OpenAPI document: they are not part of the API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request, Response

from service.errors import NotFound

router = APIRouter()

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# The URL folder of the static files; the gate opens exactly these names (service/api/gate.py).
STATIC_PREFIX = "/dashboard/"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page keeps an API key in sessionStorage, so it runs only its own scripts and talks only
# to its own origin: an injected script could not load or send the key anywhere.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


@cache
def static_file(name: str) -> StaticFile:
    """One file of the static folder, by its plain name (no folders); NotFound otherwise."""
    path = STATIC_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    # A plain name only: no separators or dot segments can lead outside the folder.
    if "/" in name or "\\" in name or name.startswith(".") or media_type is None:
        raise NotFound(f"no dashboard file {name}")
    try:
        body = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound(f"no dashboard file {name}") from None
    return StaticFile(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def file_response(request: Request, file: StaticFile) -> Response:
    headers = {**PAGE_HEADERS, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@router.get("/", include_in_schema=False)
def dashboard_page(request: Request) -> Response:
    return file_response(request, static_file("index.html"))


@router.get(STATIC_PREFIX + "{name}", include_in_schema=False)
def dashboard_file(name: str, request: Request) -> Response:
    return file_response(request, static_file(name))
