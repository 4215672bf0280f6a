"""The Idempotency-Key header of the routes that queue work (POST /jobs, POST /sweeps): a
replay with the same key returns what the first request queued, never queues it twice."""

from __future__ import annotations

import hashlib
from typing import Annotated

import orjson
from fastapi import Header
from pydantic import BaseModel

from service.errors import RequestInvalid

IdempotencyKey = Annotated[
    str | None,
    Header(
        max_length=200,
        description="Replaying a request with the same key returns what the first one queued "
        "instead of queuing it again. It must not be blank.",
    ),
]


def check_key(key: str | None) -> None:
    """A blank key would make every blank-keyed request a replay of the first one."""
    if key is not None and not key.strip():
        raise RequestInvalid(
            "header parameter idempotency-key: must not be blank; send a unique key, "
            "or leave the header out"
        )


def request_digest(request: BaseModel) -> str:
    """The request as the client sent it (fields it left out stay out), whatever the key order
    or number formatting of the body: same request, same digest. Taken before the server fills
    in its own settings, so a replay still matches after an operator changes them."""
    sent = request.model_dump(mode="json", exclude_unset=True)
    canonical = orjson.dumps(sent, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()
