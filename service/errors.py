"""The errors the service raises on purpose, each carrying the HTTP status it maps to.

    ServiceError            500 internal_error (a bug if a client ever sees it)
    ├── InvalidInput        422 invalid_input
    ├── RequestInvalid      422 validation_error
    ├── Forbidden           403 forbidden
    ├── NotFound            404 not_found
    ├── Conflict            409 conflict
    │   └── ModelNotReady   409 model_not_ready
    ├── PayloadTooLarge     413 payload_too_large
    └── UnsupportedMediaType 415 unsupported_media_type

The API turns each into {"error": kind, "detail": sentence}; nothing else reaches a client.
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


class InvalidInput(ServiceError):
    status_code = 422
    kind = "invalid_input"


class RequestInvalid(ServiceError):
    """A body that does not have the documented shape (what pydantic reports elsewhere)."""

    status_code = 422
    kind = "validation_error"


class Forbidden(ServiceError):
    """Authenticated, but this key may not do it (an operator's view, say)."""

    status_code = 403
    kind = "forbidden"


class NotFound(ServiceError):
    status_code = 404
    kind = "not_found"


class Conflict(ServiceError):
    status_code = 409
    kind = "conflict"


class ModelNotReady(Conflict):
    kind = "model_not_ready"

    def __init__(self, model_id: str, status: str) -> None:
        super().__init__(f"model {model_id} is not ready: its job is {status}")
        self.status = status


class PayloadTooLarge(ServiceError):
    status_code = 413
    kind = "payload_too_large"


class ModelUnusable(Conflict):
    """A stored model whose bytes cannot be read back (never unpickled, so never run)."""

    kind = "model_unusable"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    kind = "unsupported_media_type"
