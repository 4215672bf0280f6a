"""Every error the service answers becomes the exception of its kind, with its words."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service import errors as server_errors
from service.client import (
    APIError,
    Conflict,
    InternalError,
    InvalidInput,
    ModelNotReady,
    NotFound,
    QuotaExceeded,
    ServerError,
    ServiceClientError,
    Unavailable,
    ValidationError,
)
from service.client._exceptions import error_from_response


def answer(status: int, body: Any = None, text: str = "", **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://127.0.0.1:8000/models/m1/predict")
    if body is not None:
        return httpx.Response(status, json=body, headers=headers, request=request)
    return httpx.Response(status, text=text, headers=headers, request=request)


def every_server_error() -> list[type[server_errors.ServiceError]]:
    found: list[type[server_errors.ServiceError]] = []
    pending = [server_errors.ServiceError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("server_error", every_server_error(), ids=lambda cls: cls.kind)
def test_each_kind_the_service_answers_has_its_own_exception(
    server_error: type[server_errors.ServiceError],
) -> None:
    error = error_from_response(
        answer(server_error.status_code, {"error": server_error.kind, "detail": "why"})
    )
    assert (error.kind, error.status_code, error.detail) == (
        server_error.kind,
        server_error.status_code,
        "why",
    )
    assert type(error).kind == server_error.kind, "a kind the client does not know by name"
    assert isinstance(error, APIError) and isinstance(error, ServiceClientError)


def test_the_exception_carries_what_the_service_said_and_where() -> None:
    error = error_from_response(
        answer(409, {"error": "model_not_ready", "detail": "model m1 is not ready"})
    )
    assert isinstance(error, ModelNotReady) and isinstance(error, Conflict)
    assert error.method == "POST" and error.url.endswith("/models/m1/predict")
    assert str(error).startswith("409 model_not_ready: model m1 is not ready")


def test_every_422_is_a_value_error() -> None:
    invalid = error_from_response(answer(422, {"error": "invalid_input", "detail": "x"}))
    shape = error_from_response(answer(422, {"error": "validation_error", "detail": "x"}))
    assert isinstance(shape, ValidationError) and isinstance(shape, InvalidInput)
    assert isinstance(invalid, ValueError) and isinstance(shape, ValueError)
    assert isinstance(
        error_from_response(answer(404, {"error": "not_found", "detail": "x"})), LookupError
    )


def test_retry_after_is_read_in_seconds() -> None:
    quota = error_from_response(
        answer(429, {"error": "quota_exceeded", "detail": "x"}, **{"Retry-After": "30"})
    )
    assert isinstance(quota, QuotaExceeded) and quota.retry_after == 30.0
    busy = error_from_response(answer(503, {"error": "unavailable", "detail": "x"}))
    assert isinstance(busy, Unavailable) and isinstance(busy, ServerError)
    assert busy.retry_after is None


def test_a_kind_this_client_does_not_know_falls_back_to_its_status() -> None:
    newer = error_from_response(answer(404, {"error": "dataset_gone", "detail": "gone"}))
    assert isinstance(newer, NotFound) and newer.kind == "dataset_gone"
    teapot = error_from_response(answer(418, {"error": "teapot", "detail": "short and stout"}))
    assert type(teapot) is APIError and teapot.status_code == 418


def test_an_answer_that_is_not_the_service_s_json_still_says_what_came_back() -> None:
    proxy = error_from_response(answer(502, text="<html>Bad Gateway</html>"))
    assert isinstance(proxy, ServerError) and proxy.status_code == 502
    assert proxy.detail == "<html>Bad Gateway</html>"
    empty = error_from_response(answer(500))
    assert isinstance(empty, InternalError) and empty.detail == "Internal Server Error"
