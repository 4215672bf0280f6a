"""The published schema documents each route's errors, all in the shape actually sent."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.api.gate import OPEN_PATHS

ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
# What each route can answer besides success and the statuses every route shares.
ROUTE_ERRORS = {
    ("post", "/jobs"): {"413", "415", "422"},
    ("get", "/jobs/{job_id}"): {"404"},
    ("post", "/jobs/{job_id}/cancel"): {"404", "409"},
    ("get", "/models/{model_id}"): {"404", "409"},
    ("delete", "/models/{model_id}"): {"404", "409"},
    ("post", "/models/{model_id}/predict"): {"404", "409", "413", "415", "422"},
    ("get", "/models/{model_id}/loss"): {"404"},
    ("get", "/workers"): {"403"},
    ("get", "/models/{model_id}/export"): {"404", "409"},
    ("post", "/models/{model_id}/invocations"): {"400", "404", "415"},
    ("get", "/v2/models/{model_id}"): {"400", "404"},
    ("post", "/v2/models/{model_id}/versions/{version}/infer"): {"400", "404"},
}


def test_every_operation_documents_its_errors_as_error_out(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            responses = operation["responses"]
            errors = {status for status in responses if status >= "400"}
            assert "503" in errors, (method, path)  # the database can always be away
            if path not in OPEN_PATHS:
                assert "401" in errors, (method, path)  # with API keys on
            assert ROUTE_ERRORS.get((method, path), set()) <= errors, (method, path)
            for status in errors:
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema == ERROR_REF, (method, path, status)
