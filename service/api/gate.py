"""Who is asking, decided from the headers before a byte of the body is read.

With API keys on, a request without a valid key costs the server its headers only: it is
answered 401 before the body is received, parsed or validated, so unauthenticated clients
cannot make the API read megabytes. A request with more than one Authorization header is a
400 everywhere: reading only the first (or accepting either) would let two layers disagree
about who is asking. The principal found here rides in the ASGI scope; the routes and the
predict fast path read it instead of authenticating again.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.auth import ANONYMOUS, KeyRing, Principal
from service.api.error_handlers import error_response
from service.errors import BadRequest, ServiceError

# The scope key the principal travels under.
PRINCIPAL = "service.principal"
# Paths anyone may read: liveness (probes carry no keys), and the API's own documentation.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/",  # the dashboard's page: it asks for the key itself, then sends it with each call
    }
)
# The dashboard's static files: one plain file name under /dashboard/, nothing deeper, so no
# dot segment or other route can ride on the prefix into the open.
OPEN_FILE = re.compile(r"/dashboard/[A-Za-z0-9_-]+\.(?:html|js|css|svg)")


def is_open(path: str) -> bool:
    """Whether anyone may read this path without a key."""
    return path in OPEN_PATHS or OPEN_FILE.fullmatch(path) is not None


def authorization_header(scope: Scope) -> str | None:
    """The one Authorization header's value (None without one); BadRequest for several."""
    values = [value for name, value in scope["headers"] if name == b"authorization"]
    if len(values) > 1:
        raise BadRequest("send one Authorization header, not several")
    return values[0].decode("latin-1") if values else None


def principal_of(scope: Scope) -> Principal | None:
    principal: Principal | None = scope.get(PRINCIPAL)
    return principal


class Gate:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            header = authorization_header(scope)
            if not self.keys.enabled:
                scope[PRINCIPAL] = ANONYMOUS
            elif not is_open(scope["path"]):
                scope[PRINCIPAL] = self.keys.authenticate(header)
        except ServiceError as exc:
            response = error_response(exc.status_code, exc.kind, exc.detail, exc.response_headers())
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
