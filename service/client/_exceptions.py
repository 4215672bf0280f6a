"""What the client raises.

    ServiceClientError            everything this package raises
    ├── TransportError            no answer from the service: it could not be reached, the
    │                             connection broke, or it did not answer within the timeout
    ├── WaitTimeout               wait() or wait_sweep() gave up before the job or sweep
    │                             ended (also a TimeoutError)
    ├── JobFailed                 Job.raise_for_status(): the job ended failed or cancelled
    └── APIError                  the service answered with an error: status_code, kind, detail
        ├── BadRequest            400 bad_request
        ├── Unauthorized          401 unauthorized
        ├── Forbidden             403 forbidden
        ├── NotFound              404 not_found (also a LookupError)
        ├── MethodNotAllowed      405 method_not_allowed
        ├── RequestTimeout        408 request_timeout
        ├── Conflict              409 conflict
        │   ├── ModelNotReady     409 model_not_ready
        │   └── ModelUnusable     409 model_unusable
        ├── PayloadTooLarge       413 payload_too_large
        ├── UnsupportedMediaType  415 unsupported_media_type
        ├── InvalidInput          422 invalid_input (also a ValueError)
        │   └── ValidationError   422 validation_error
        ├── QuotaExceeded         429 quota_exceeded (retry_after says when)
        ├── HeadersTooLarge       431 headers_too_large
        └── ServerError           5xx
            ├── InternalError     500 internal_error (a bug in the service)
            ├── FeatureNotInstalled 501 not_implemented (an optional extra is missing there)
            ├── Unavailable       503 unavailable (retry_after says when)
            └── Overloaded        503 overloaded (retry_after says when)

The service answers every error as {"error": kind, "detail": sentence}: the kind picks the
class, so a new kind the client does not know yet still lands on the class of its status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from service.client._results import Job, Sweep


class ServiceClientError(Exception):
    """Base class of everything the client raises."""


class TransportError(ServiceClientError):
    """The request got no answer (connection refused or broken, DNS, timeout)."""


class WaitTimeout(ServiceClientError, TimeoutError):
    """wait() or wait_sweep() stopped waiting; the job or sweep goes on. After wait(), `job`
    is the job's state at the last poll (and `sweep` None); after wait_sweep(), `sweep` is the
    sweep's (and `job` None)."""

    def __init__(self, waited_on: Job | Sweep, timeout: float) -> None:
        from service.client._results import Job

        self.job: Job | None = None
        self.sweep: Sweep | None = None
        if isinstance(waited_on, Job):
            self.job = waited_on
            progress = f"epoch {waited_on.epoch}/{waited_on.epochs}"
            what = "job"
        else:
            self.sweep = waited_on
            ended = waited_on.n_trials - sum(
                waited_on.counts.get(status, 0) for status in ("queued", "running")
            )
            progress = f"{ended}/{waited_on.n_trials} trials ended"
            what = "sweep"
        super().__init__(
            f"{what} {waited_on.id} is still {waited_on.status} after {timeout:g}s ({progress})"
        )
        self.timeout = timeout


class JobFailed(ServiceClientError):
    """The job ended without a model: it failed (`job.error` says why) or was cancelled."""

    def __init__(self, job: Job) -> None:
        reason = f": {job.error}" if job.error else ""
        super().__init__(f"job {job.id} {job.status}{reason}")
        self.job = job


class APIError(ServiceClientError):
    """The service refused the request. `kind` and `detail` are the service's own words."""

    status_code: int = 0
    kind: str = "error"

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        kind: str,
        method: str = "",
        url: str = "",
        retry_after: float | None = None,
    ) -> None:
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{status_code} {kind}: {detail}{where}")
        self.detail = detail
        # Instance values: an unknown kind or status still reports what the service sent.
        self.status_code = status_code
        self.kind = kind
        self.method = method
        self.url = url
        self.retry_after = retry_after


class BadRequest(APIError):
    status_code = 400
    kind = "bad_request"


class Unauthorized(APIError):
    """No API key, or one the service does not know."""

    status_code = 401
    kind = "unauthorized"


class Forbidden(APIError):
    status_code = 403
    kind = "forbidden"


class NotFound(APIError, LookupError):
    """No job, model, dataset or sweep with this id (or one another API key owns)."""

    status_code = 404
    kind = "not_found"


class MethodNotAllowed(APIError):
    status_code = 405
    kind = "method_not_allowed"


class RequestTimeout(APIError):
    status_code = 408
    kind = "request_timeout"


class Conflict(APIError):
    """The request does not fit the resource's state (cancelling a job that already ended)."""

    status_code = 409
    kind = "conflict"


class ModelNotReady(Conflict):
    """The model's job has not succeeded (yet): wait for it first."""

    kind = "model_not_ready"


class ModelUnusable(Conflict):
    kind = "model_unusable"


class PayloadTooLarge(APIError):
    """The body is over the service's limit: upload the data as a dataset instead."""

    status_code = 413
    kind = "payload_too_large"


class UnsupportedMediaType(APIError):
    status_code = 415
    kind = "unsupported_media_type"


class InvalidInput(APIError, ValueError):
    """The service refused the request's content (every 422 is one)."""

    status_code = 422
    kind = "invalid_input"


class ValidationError(InvalidInput):
    """The body does not have the documented shape (unknown field, wrong type, bad value)."""

    kind = "validation_error"


class QuotaExceeded(APIError):
    """The API key holds as much as it may; try again after `retry_after` seconds."""

    status_code = 429
    kind = "quota_exceeded"


class HeadersTooLarge(APIError):
    status_code = 431
    kind = "headers_too_large"


class ServerError(APIError):
    """The service failed (5xx)."""

    status_code = 500
    kind = "internal_error"


class InternalError(ServerError):
    """A bug in the service: worth reporting with the request that caused it."""


class FeatureNotInstalled(ServerError):
    """The service lacks an optional extra this request needs (say, matplotlib for plots):
    its operator can install it; retrying will not help until then."""

    status_code = 501
    kind = "not_implemented"


class Unavailable(ServerError):
    """The service cannot reach its database just now; retry after `retry_after` seconds."""

    status_code = 503
    kind = "unavailable"


class Overloaded(ServerError):
    """The request's work ran past the service's deadline; retry, or ask for less."""

    status_code = 503
    kind = "overloaded"


_LEAVES: tuple[type[APIError], ...] = (
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    Conflict,
    ModelNotReady,
    ModelUnusable,
    PayloadTooLarge,
    UnsupportedMediaType,
    InvalidInput,
    ValidationError,
    QuotaExceeded,
    HeadersTooLarge,
    InternalError,
    FeatureNotInstalled,
    Unavailable,
    Overloaded,
)
_BY_KIND: dict[str, type[APIError]] = {error.kind: error for error in _LEAVES}
# For a kind this client does not know: the most general class of that status.
_BY_STATUS: dict[int, type[APIError]] = {
    error.status_code: error
    for error in reversed(_LEAVES)
    if error not in (ModelNotReady, ModelUnusable, ValidationError, Unavailable, Overloaded)
}


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error answer, from its {"error", "detail"} body when it has one
    (a proxy in front of the service may answer with HTML)."""
    status = response.status_code
    kind, detail = _kind_and_detail(response)
    cls = _BY_KIND.get(kind) if kind is not None else None
    if cls is None or cls.status_code != status:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return cls(
        detail,
        status_code=status,
        kind=kind or cls.kind,
        method=response.request.method,
        url=str(response.request.url),
        retry_after=retry_after_seconds(response),
    )


def _kind_and_detail(response: httpx.Response) -> tuple[str | None, str]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        kind = body.get("error")
        return (kind if isinstance(kind, str) else None), body["detail"]
    text = response.text.strip()
    return None, (text[:500] if text else response.reason_phrase)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds (the service sends seconds, never a date)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
