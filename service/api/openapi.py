"""The published OpenAPI schema: stable operation ids, every body a named schema, and every
error documented in the shape we actually send.

FastAPI documents request validation errors as its own `HTTPValidationError`; our handlers
answer `{"error", "detail"}` instead, and a few statuses can come from any operation
(400 for two Authorization headers, 401 with API keys on, 413 for a too-large body, 503 when
the database is unreachable). Every operation but the open ones declares the bearer scheme.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.api.gate import OPEN_PATHS
from service.api.protocol_schemas import MlflowScoringRequest, V2InferenceRequest
from service.schemas import DatasetCreate, ErrorOut, JobCreate, PredictRequest
from service.sweeps.schemas import SweepCreate

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
BEARER = "bearer"
FORM_TYPES = {"multipart/form-data", "application/x-www-form-urlencoded"}
# Bodies their routes read themselves (to parse them off the event loop, or in their protocol's
# own wire format): documented by reference, see schema_ref.
SELF_PARSED_BODIES: tuple[type[BaseModel], ...] = (
    JobCreate,
    DatasetCreate,
    SweepCreate,
    PredictRequest,
    V2InferenceRequest,
    MlflowScoringRequest,
)


# Each operation's id: the name generated clients give its function, so once published it never
# changes. A new route needs its line here; tests/test_openapi_contract.py fails until it has one
# (FastAPI's default ids, such as predict_model_models__model_id__predict_post, follow the code).
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("post", "/jobs"): "submit_job",
    ("get", "/jobs"): "list_jobs",
    ("get", "/jobs/{job_id}"): "get_job",
    ("post", "/jobs/{job_id}/cancel"): "cancel_job",
    ("get", "/jobs/{job_id}/data"): "get_job_data",
    ("get", "/jobs/{job_id}/events"): "stream_job_events",
    ("get", "/events"): "stream_events",
    ("get", "/models"): "list_models",
    ("get", "/models/{model_id}"): "get_model",
    ("delete", "/models/{model_id}"): "delete_model",
    ("post", "/models/{model_id}/predict"): "predict",
    ("get", "/models/{model_id}/loss"): "get_loss",
    ("get", "/models/{model_id}/loss.png"): "plot_loss_png",
    ("get", "/models/{model_id}/loss.svg"): "plot_loss_svg",
    ("get", "/models/{model_id}/surface.png"): "plot_surface_png",
    ("get", "/metrics"): "get_metrics",
    ("get", "/models/{model_id}/export"): "export_model",
    ("post", "/models/{model_id}/invocations"): "mlflow_invocations",
    ("get", "/models/{model_id}/ping"): "mlflow_ping",
    ("post", "/datasets"): "upload_dataset",
    ("get", "/datasets"): "list_datasets",
    ("get", "/datasets/{dataset_id}"): "get_dataset",
    ("delete", "/datasets/{dataset_id}"): "delete_dataset",
    ("post", "/sweeps"): "submit_sweep",
    ("get", "/sweeps"): "list_sweeps",
    ("get", "/sweeps/{sweep_id}"): "get_sweep",
    ("get", "/sweeps/{sweep_id}/loss"): "get_sweep_loss",
    ("post", "/sweeps/{sweep_id}/cancel"): "cancel_sweep",
    ("delete", "/sweeps/{sweep_id}"): "delete_sweep",
    ("get", "/workers"): "list_workers",
    ("get", "/healthz"): "get_health",
    ("get", "/v2"): "v2_server_metadata",
    ("get", "/v2/health/live"): "v2_server_live",
    ("get", "/v2/health/ready"): "v2_server_ready",
    ("get", "/v2/models/{model_id}"): "v2_model_metadata",
    ("get", "/v2/models/{model_id}/ready"): "v2_model_ready",
    ("post", "/v2/models/{model_id}/infer"): "v2_infer",
    ("get", "/v2/models/{model_id}/versions/{version}"): "v2_model_version_metadata",
    ("get", "/v2/models/{model_id}/versions/{version}/ready"): "v2_model_version_ready",
    ("post", "/v2/models/{model_id}/versions/{version}/infer"): "v2_infer_version",
}


def schema_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to `model`'s component schema, for a route's `openapi_extra`."""
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _name_form_bodies(operation: dict[str, Any], components: dict[str, Any]) -> None:
    """A form body (an upload's fields) is described inline by its route; it becomes a
    component named after the operation (`upload_dataset` -> `UploadDatasetForm`), the stable
    name of the class a generated client fills it in with."""
    content = operation.get("requestBody", {}).get("content", {})
    for media_type in FORM_TYPES & content.keys():
        form = content[media_type].get("schema", {})
        if "$ref" not in form:
            name = "".join(word.title() for word in operation["operationId"].split("_")) + "Form"
            components[name] = {"title": name, **form}
            content[media_type]["schema"] = {"$ref": f"#/components/schemas/{name}"}


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
            for method, operation in operations.items():
                if (method, path) in OPERATION_IDS:
                    operation["operationId"] = OPERATION_IDS[method, path]
                _name_form_bodies(operation, components)
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
