"""The published OpenAPI schema, with every error documented in the shape we actually send.

FastAPI documents request validation errors as its own `HTTPValidationError`; our handlers
answer `{"error", "detail"}` instead, and a few statuses can come from any operation
(400 for two Authorization headers, 401 with API keys on, 413 for a too-large body, 503 when
the database is unreachable). Every operation but the open ones declares the bearer scheme.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from service.api.gate import OPEN_PATHS
from service.schemas import ErrorOut, JobCreate

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
BEARER = "bearer"
SELF_PARSED_BODIES = (JobCreate,)


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
        # Bodies their routes read themselves (to parse them off the event loop).
        _, documented = models_json_schema(
            [(body, "validation") for body in SELF_PARSED_BODIES],
            ref_template="#/components/schemas/{model}",
        )
        for name, definition in documented.get("$defs", {}).items():
            components.setdefault(name, definition)
        # Declared, so clients and the interactive docs (/docs: Authorize) can send a key.
        schema["components"]["securitySchemes"] = {
            BEARER: {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key from SERVICE_API_KEYS (when keys are configured).",
            }
        }
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
                    operation["security"] = [{BEARER: []}]
                    responses.setdefault("401", _error("A valid API key is required"))
                responses.setdefault("400", _error("More than one Authorization header"))
                responses.setdefault("503", _error("The database is unreachable"))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
