"""What both clients do around each request: headers, when to retry, and errors."""

from __future__ import annotations

from typing import Any

import httpx

from service.client._exceptions import TransportError, error_from_response, retry_after_seconds
from service.client._operations import Call

DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 2
# The first retry waits this long, each next one twice as long, none longer than the cap.
RETRY_BACKOFF_SECONDS = 0.25
MAX_RETRY_WAIT_SECONDS = 30.0
UPLOAD_CHUNK_BYTES = 64 * 1024


def default_headers(api_key: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def request_arguments(call: Call) -> dict[str, Any]:
    """httpx.request's arguments for a call, but the body of an upload (each client streams
    that file its own way)."""
    headers = dict(call.headers)
    if call.content_type is not None:
        headers["Content-Type"] = call.content_type
    if call.upload is not None:
        # A known length: the service can refuse an oversized file before reading it.
        headers["Content-Length"] = str(call.upload.stat().st_size)
    arguments: dict[str, Any] = {"params": call.params, "headers": headers}
    if call.json is not None:
        arguments["json"] = call.json
    if call.content is not None:
        arguments["content"] = call.content
    return arguments


def retry_wait(
    call: Call,
    attempt: int,
    retries: int,
    *,
    response: httpx.Response | None = None,
    error: httpx.TransportError | None = None,
) -> float | None:
    """Seconds to wait before sending the call again, or None to give up.

    A connection that was never made can always be retried: the service saw nothing. A lost
    answer or a 503 (the service's database busy, or a deadline passed) only when the call
    is safe to repeat."""
    if attempt >= retries:
        return None
    backoff = min(RETRY_BACKOFF_SECONDS * 2**attempt, MAX_RETRY_WAIT_SECONDS)
    if error is not None:
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        return backoff if never_sent or call.retry else None
    if response is not None and response.status_code == 503 and call.retry:
        asked = retry_after_seconds(response)
        return min(asked if asked is not None else backoff, MAX_RETRY_WAIT_SECONDS)
    return None


def transport_error(call: Call, base_url: httpx.URL, error: httpx.TransportError) -> TransportError:
    return TransportError(
        f"{call.method} {base_url.join(call.path)}: no answer from the service "
        f"({type(error).__name__}: {error})"
    )


def answer(response: httpx.Response) -> Any:
    """A success's JSON body (None when it has none); an error answer raises its APIError."""
    if response.is_error:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()
