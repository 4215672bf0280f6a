"""The OpenAPI document as other services integrate through it: a valid document, a stable
snake_case id for every operation, and every body a named schema (what generated clients call
their functions and classes)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate

from service.api.app import create_app
from service.config import Settings

# The published ids: clients generated in any language name their functions after them, so a
# change here breaks them. A new route adds its line (and one in service/api/openapi.py).
OPERATION_IDS = {
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
CLEAN_ID = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
COMPONENT_REF = re.compile(r"^#/components/schemas/[A-Za-z0-9]+$")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Building the schema needs no database.
    schema: dict[str, Any] = create_app(Settings()).openapi()
    return schema


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)  # references resolve, and every object has its OpenAPI shape


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    # The validator does not follow references it never needs; a generator does.
    components = document["components"]["schemas"]
    dangling = {ref for ref in references(document) if ref.split("/")[-1] not in components}
    assert dangling == set()


def test_every_operation_has_its_published_id(document: dict[str, Any]) -> None:
    published = {key: op.get("operationId") for key, op in operations(document).items()}
    unnamed = sorted(
        f"{m.upper()} {p}: {published[m, p]}" for m, p in published.keys() - OPERATION_IDS.keys()
    )
    assert not unnamed, (
        "operations without a published id (add each to OPERATION_IDS in "
        f"service/api/openapi.py and in this test): {unnamed}"
    )
    assert published == OPERATION_IDS


def test_ids_are_snake_case_and_unique(document: dict[str, Any]) -> None:
    ids = [op["operationId"] for op in operations(document).values()]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if not CLEAN_ID.match(i)] == []


def test_a_route_added_without_an_id_is_caught() -> None:
    app: FastAPI = create_app(Settings())

    @app.get("/models/{model_id}/card")
    def model_card(model_id: str) -> dict[str, str]:
        return {}

    published = operations(app.openapi())
    assert published.keys() - OPERATION_IDS.keys() == {("get", "/models/{model_id}/card")}


def test_every_body_is_a_named_schema(document: dict[str, Any]) -> None:
    """Requests and answers in JSON or forms refer to a component (a generated client's
    class); other media types (files, CSV, binary tensors) are strings."""
    inline = []
    for (method, path), operation in operations(document).items():
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += [(status, answer) for status, answer in operation["responses"].items()]
        for where, body in bodies:
            for media_type, content in body.get("content", {}).items():
                schema = content.get("schema", {})
                may_be_inline = media_type != "application/json" and schema.get("type") == "string"
                if not may_be_inline and not COMPONENT_REF.match(schema.get("$ref", "")):
                    inline.append(f"{method.upper()} {path} {where} {media_type}: {schema}")
    assert inline == []


def test_a_form_body_becomes_a_component_named_after_its_operation() -> None:
    app: FastAPI = create_app(Settings())
    form = {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
    body = {"content": {"multipart/form-data": {"schema": form}}, "required": True}

    @app.post("/uploads", operation_id="upload_file", openapi_extra={"requestBody": body})
    def upload_file() -> None:
        return None

    document = app.openapi()
    content = document["paths"]["/uploads"]["post"]["requestBody"]["content"]
    assert content["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/UploadFileForm"
    }
    assert document["components"]["schemas"]["UploadFileForm"]["properties"] == form["properties"]


def test_components_carry_no_framework_defaults(document: dict[str, Any]) -> None:
    """Names FastAPI makes up for inline bodies (`Body_...`, `Response ...`) would become
    generated class names that change with the code."""
    for name, schema in document["components"]["schemas"].items():
        assert not name.startswith(("Body_", "Response")), name
        assert not str(schema.get("title", "")).startswith("Response "), name


def test_the_predict_example_stays_beside_its_schema(document: dict[str, Any]) -> None:
    body = document["paths"]["/models/{model_id}/predict"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["$ref"] == "#/components/schemas/PredictRequest"
    assert schema["examples"] == document["components"]["schemas"]["PredictRequest"]["examples"]
