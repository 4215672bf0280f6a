"""The errors the service answers with, each carrying the HTTP status and kind it maps to.

    ServiceError              500 internal_error (a bug if a client ever sees it)
    ├── BadRequest            400 bad_request
    ├── InvalidInput          422 invalid_input
    ├── RequestInvalid        422 validation_error
    ├── Unauthorized          401 unauthorized
    ├── Forbidden             403 forbidden
    ├── NotFound              404 not_found
    ├── MethodNotAllowed      405 method_not_allowed
    ├── RequestTimeout        408 request_timeout
    ├── Conflict              409 conflict
    │   ├── ModelNotReady     409 model_not_ready
    │   └── ModelUnusable     409 model_unusable
    ├── PayloadTooLarge       413 payload_too_large
    ├── UnsupportedMediaType  415 unsupported_media_type
    ├── QuotaExceeded         429 quota_exceeded
    ├── HeadersTooLarge       431 headers_too_large
    ├── FeatureNotInstalled   501 not_implemented
    ├── DatabaseUnavailable   503 unavailable
    └── Overloaded            503 overloaded

The API turns each into {"error": kind, "detail": sentence}; nothing else reaches a client.
Errors the framework raises by status alone (a 404 for an unknown path, a 405) take the kind of
the class that owns that status here (KIND_OF_STATUS), so each kind is written once.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    status_code: int = 500
    kind: str = "internal_error"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def response_headers(self) -> dict[str, str] | None:
        return self.headers


class BadRequest(ServiceError):
    """A request the HTTP layer cannot take as meant (say, two Authorization headers)."""

    status_code = 400
    kind = "bad_request"


class InvalidInput(ServiceError):
    status_code = 422
    kind = "invalid_input"


class RequestInvalid(ServiceError):
    """A body that does not have the documented shape (what pydantic reports elsewhere)."""

    status_code = 422
    kind = "validation_error"


class Unauthorized(ServiceError):
    status_code = 401
    kind = "unauthorized"
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServiceError):
    """Authenticated, but this key may not do it (an operator's view, say)."""

    status_code = 403
    kind = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    kind = "not_found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    kind = "method_not_allowed"


class RequestTimeout(ServiceError):
    """The client sent its headers or body too slowly (answered by the HTTP layer)."""

    status_code = 408
    kind = "request_timeout"


class Conflict(ServiceError):
    status_code = 409
    kind = "conflict"


class ModelNotReady(Conflict):
    kind = "model_not_ready"

    def __init__(self, model_id: str, status: str) -> None:
        super().__init__(f"model {model_id} is not ready: its job is {status}")
        self.status = status


class ModelUnusable(Conflict):
    """A stored model whose bytes cannot be read back (never unpickled, so never run)."""

    kind = "model_unusable"


class PayloadTooLarge(ServiceError):
    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    kind = "unsupported_media_type"


class QuotaExceeded(ServiceError):
    """This key holds as much as it may (active jobs, stored bytes): retry once some end."""

    status_code = 429
    kind = "quota_exceeded"

    def __init__(self, detail: str, retry_after_seconds: int = 30) -> None:
        super().__init__(detail)
        self.retry_after_seconds = retry_after_seconds

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after_seconds)}


class HeadersTooLarge(ServiceError):
    status_code = 431
    kind = "headers_too_large"


class FeatureNotInstalled(ServiceError):
    """The server lacks an optional extra this request needs (say, matplotlib for plots):
    the operator can install it; retrying will not help until then."""

    status_code = 501
    kind = "not_implemented"


class DatabaseUnavailable(ServiceError):
    """Busy or unreachable: the client should retry, and is told when."""

    status_code = 503
    kind = "unavailable"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class Overloaded(ServiceError):
    """The request's work ran past its deadline: the client may retry, or ask for less."""

    status_code = 503
    kind = "overloaded"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


# The kind of a bare status (the framework's own 404s and 405s, a body's 413): the class that
# owns that status above. RequestInvalid owns 422 (the framework's validation errors).
KIND_OF_STATUS: dict[int, str] = {
    error.status_code: error.kind
    for error in (
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        RequestTimeout,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        RequestInvalid,
        QuotaExceeded,
        HeadersTooLarge,
        DatabaseUnavailable,
        BadRequest,
    )
}
