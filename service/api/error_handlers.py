"""Every error leaves the API as {"error": kind, "detail": sentence}."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from service.errors import (
    KIND_OF_STATUS,
    DatabaseUnavailable,
    RequestInvalid,
    ServiceError,
)

log = logging.getLogger("service.api")

MAX_LISTED_ERRORS = 5
# What a request whose client has gone is logged as (nginx's convention); no one receives it.
CLIENT_CLOSED_REQUEST = 499


def error_response(
    status: int, kind: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


def routes_rendering_errors(render: Callable[[ServiceError], Response]) -> type[APIRoute]:
    """A route class whose ServiceErrors leave through `render`: a standard protocol's routes
    answer errors in that protocol's shape, while the native routes keep theirs."""

    class ProtocolRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except ServiceError as exc:
                    return render(exc)

            return handle

    return ProtocolRoute


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """A human sentence naming where each problem is, e.g. `data.x[3][1]: Input should be ...`."""
    parts = []
    for error in errors[:MAX_LISTED_ERRORS]:
        location = _location(error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if tuple(error.get("loc", ())) == ("body",) and error.get("type") in (
            "model_attributes_type",
            "dict_type",
            "model_type",
        ):
            message = "the body must be a JSON object"
        elif error.get("type") == "json_invalid":
            message = (
                f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
            )
        parts.append(f"{location}: {message}" if location else message)
    more = len(errors) - MAX_LISTED_ERRORS
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        source = parts.pop(0)
        if source != "body" and parts:
            return f"{source} parameter {parts[0]}"
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part).startswith(("function-after", "union[", "list[", "tagged-union")):
            text += f".{part}" if text else str(part)
    return text


def allowed_methods(app: FastAPI, request: Request) -> set[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return methods


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def on_service_error(_request: Request, exc: ServiceError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("service error: %s", exc.detail)
        return error_response(exc.status_code, exc.kind, exc.detail, exc.response_headers())

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            RequestInvalid.status_code,
            RequestInvalid.kind,
            describe_validation_errors(list(exc.errors())),
        )

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
            # FastAPI's body parser gives up on bytes that are not UTF-8 JSON text with a bare
            # 400; say what is wrong, and answer like every other unparseable body (422).
            return error_response(
                RequestInvalid.status_code,
                RequestInvalid.kind,
                f"the body is not valid JSON ({exc.__cause__})",
            )
        kind = KIND_OF_STATUS.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(sorted(allowed_methods(app, request)))
        return error_response(exc.status_code, kind, detail, headers or None)

    @app.exception_handler(OperationalError)
    async def on_database_unavailable(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
        error = DatabaseUnavailable("the database is busy or unreachable; retry")
        return error_response(error.status_code, error.kind, error.detail, error.headers)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # Not an error of ours, and nobody is left to answer: one quiet line, no traceback.
        log.info(
            "client left during %s %s before its body arrived", request.method, request.url.path
        )
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it was logged")


def invalid_body(exc: ValidationError, *where: str) -> RequestValidationError:
    """A body a route parsed itself, refused exactly as the framework refuses any invalid
    body: each error located under `body` (and `where`, for a part of it)."""
    return RequestValidationError(
        [{**error, "loc": ("body", *where, *error["loc"])} for error in exc.errors()]
    )
