"""Counting every request for /metrics, the predict fast path's included.

The middleware wraps the whole server (create_asgi_app), so it sees the requests the gate
refuses and the ones the fast path answers below FastAPI. Requests are labelled with their
route template, never the raw path (a path holds ids: one series per model would grow without
bound). The router leaves the matched route in the scope; the fast path, which never reaches
the router, leaves its template under FAST_PATH_ROUTE instead; a request answered before any
routing (the gate's 401, a body too large) is matched here against the documented paths.

Per request the cost is two clock reads, two dictionary lookups of labelled children made once,
a counter increment and, for predictions, one histogram observation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics_registry import PREDICT_LATENCY, REQUESTS

# The scope key under which the fast path names the route it answered for.
FAST_PATH_ROUTE = "service.route"
NATIVE_PREDICT = "/models/{model_id}/predict"
V2_INFER = "/v2/models/{model_id}/infer"
V2_INFER_VERSIONED = "/v2/models/{model_id}/versions/{version}/infer"
PREDICT_ROUTES = frozenset(
    {NATIVE_PREDICT, V2_INFER, V2_INFER_VERSIONED, "/models/{model_id}/invocations"}
)
# Paths that match no route share one series, whatever they are.
UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app: ASGIApp, documented_paths: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.documented_paths = documented_paths
        self._templates: list[tuple[re.Pattern[str], str]] | None = None
        self._counters: dict[str, dict[int, Counter]] = {}
        self._latencies: dict[str, Histogram | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.record(self.route_of(scope), status, time.perf_counter() - started)

    def record(self, route: str, status: int, seconds: float) -> None:
        by_status = self._counters.get(route)
        if by_status is None:
            by_status = self._counters[route] = {}
            self._latencies[route] = (
                PREDICT_LATENCY.labels(route) if route in PREDICT_ROUTES else None
            )
        counter = by_status.get(status)
        if counter is None:
            counter = by_status[status] = REQUESTS.labels(route, str(status))
        counter.inc()
        latency = self._latencies[route]
        if latency is not None:
            latency.observe(seconds)

    def route_of(self, scope: Scope) -> str:
        template: str | None = scope.get(FAST_PATH_ROUTE)
        if template is not None:
            return template
        route = scope.get("route")
        if route is None:
            return self.matching_route(scope["path"])
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        return path if isinstance(path, str) and path else UNMATCHED

    def matching_route(self, path: str) -> str:
        """The template of the route a request answered before routing was meant for (the
        gate's 401, a 413): matched against the documented paths, compiled on first need."""
        if self._templates is None:
            self._templates = [(compile_path(t)[0], t) for t in self.documented_paths()]
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        return UNMATCHED
