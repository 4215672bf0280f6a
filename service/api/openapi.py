"""The published OpenAPI schema, with every error documented in the shape we actually send.

FastAPI documents request validation errors as its own `HTTPValidationError`; our handlers
answer `{"error", "detail"}` instead, and a few statuses can come from any operation
(401 with API keys on, 413 for a too-large body, 503 when the database is unreachable).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from service.schemas import ErrorOut

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
OPEN_PATHS = ("/healthz",)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorOut"] = ErrorOut.model_json_schema()
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "422" in responses:
                    responses["422"] = _error(responses["422"].get("description", "Invalid"))
                if "requestBody" in operation:
                    responses.setdefault("413", _error("The body is over the size limit"))
                if path not in OPEN_PATHS:
                    responses.setdefault("401", _error("A valid API key is required"))
                responses.setdefault("503", _error("The database is unreachable"))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
