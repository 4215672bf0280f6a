"""Refuse request bodies over a size limit before they are read into memory.

A declared Content-Length over the limit is answered 413 at once. A body without one (chunked)
is counted as it streams in; the read that crosses the limit raises 413, so at most one chunk
past the limit is ever held.

A client that asked to close the connection after this request (`Connection: close`, as
Python's urllib always does, or HTTP/1.0) would otherwise see the server close while it still
sends: the unread body turns the close into a TCP reset, and the client gets
ConnectionResetError instead of the 413. For those, the rest of the body is read and thrown
away first, as nginx's lingering close does, up to DRAIN_MAX_BYTES and DRAIN_SECONDS.
Keep-alive connections need none of this: the server discards the rest of the body itself.

A few routes take larger bodies than the rest (dataset uploads, which stream to disk rather
than memory): each has its own limit, given by method and path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.error_handlers import error_response
from service.errors import PayloadTooLarge
from service.tuning import DRAIN_MAX_BYTES, DRAIN_SECONDS


def closes_after(scope: Scope) -> bool:
    """Whether the connection ends with this request (so unread body bytes would reset it)."""
    connection = dict(scope["headers"]).get(b"connection", b"").lower()
    return b"close" in connection or scope.get("http_version") == "1.0"


async def drain(receive: Receive, already: int = 0) -> None:
    """Read and discard the rest of a body we refuse, within the drain bounds."""
    received = already
    deadline = time.monotonic() + DRAIN_SECONDS
    with contextlib.suppress(TimeoutError):
        while received <= DRAIN_MAX_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            message = await asyncio.wait_for(receive(), timeout=remaining)
            if message["type"] != "http.request":
                return
            received += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


class BodySizeLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        route_limits: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """`route_limits` maps (method, path) to the limit of that route, in place of
        `max_bytes`."""
        self.app = app
        self.max_bytes = max_bytes
        self.route_limits = dict(route_limits or {})

    def limit_of(self, scope: Scope) -> int:
        return self.route_limits.get((scope["method"], scope["path"]), self.max_bytes)

    @staticmethod
    def _too_large(limit: int) -> str:
        return f"the request body is larger than the limit of {limit} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if closes_after(scope):
                await drain(receive)
            response = error_response(
                PayloadTooLarge.status_code, PayloadTooLarge.kind, self._too_large(limit)
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if message.get("more_body", False) and closes_after(scope):
                        await drain(receive, received)
                    # FastAPI re-raises HTTPException from body reading; the handler shapes it.
                    raise HTTPException(PayloadTooLarge.status_code, self._too_large(limit))
            return message

        await self.app(scope, counting_receive, send)
