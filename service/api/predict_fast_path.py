"""The native predict protocol's hot path, answered below the framework.

`POST /models/{id}/predict` is the request a busy deployment sees most, and FastAPI's layers
(routing, dependency solving, exception wrappers) cost several times the prediction itself.
This ASGI middleware answers the common case directly: a JSON body with a Content-Length within
the limit, a valid key, a model already in this process's cache, valid inputs, a small forward
pass. Everything else (a cache miss, any error at all) continues to the FastAPI route with the
body replayed, so loading, errors and documentation stay in one place. Both paths share
`json_io` and, from `service.inference`, `predict`, `prediction_body` and `INLINE_WORK`; the
route imports nothing from here. tests/test_fast_path.py holds the two to the same bytes.
"""

from __future__ import annotations

import logging
import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.gate import authorization_header, principal_of
from service.api.json_io import parse_rows
from service.api.state import ApiState
from service.errors import ServiceError
from service.inference import prediction_body
from service.tuning import INLINE_WORK

log = logging.getLogger("service.api")

PREDICT_PATH = re.compile(r"^/models/([^/]+)/predict$")
JSON_TYPES = (b"application/json",)
# Failures of the request itself, which the route reports to the client: not worth a warning.
CLIENT_ERRORS = (ServiceError, ValueError)


class PredictFastPath:
    def __init__(self, app: ASGIApp, state: ApiState, max_body_bytes: int) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            PREDICT_PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        headers = dict(scope["headers"]) if match else {}
        length = headers.get(b"content-length", b"")
        if (
            match is None
            or not length.isdigit()
            or int(length) > self.max_body_bytes
            or headers.get(b"content-type", b"").split(b";")[0].strip() not in JSON_TYPES
        ):
            await self.app(scope, receive, send)
            return
        body, more = await read_body(receive)
        if not more:
            answer = await self.answer(scope, match.group(1), body)
            if answer is not None:
                await send_json(send, answer)
                return
        await self.app(scope, replay(body, more, receive), send)

    async def answer(self, scope: Scope, model_id: str, body: bytes) -> bytes | None:
        """The response body, or None when the full route should take the request."""
        predictors, keys = self.state.predictors, self.state.keys
        predictor = predictors.cached(model_id)
        if predictor is None:
            return None
        try:
            principal = principal_of(scope) or keys.authenticate(authorization_header(scope))
            if not principal.can_see(predictor.owner):
                return None
            inputs = parse_rows(body)
            if inputs.shape[0] * predictor.n_parameters > INLINE_WORK:
                return None
            self.state.limits.check(predictor, inputs.shape[0])
            prediction = await self.state.batcher.predict(predictor, inputs)
        except CLIENT_ERRORS as exc:  # the full route repeats the work and reports it
            log.debug("predict fast path: %s for model %s; the route answers", exc, model_id)
            return None
        except Exception:  # a bug here must not cost the request: the route still answers
            log.exception("predict fast path failed for model %s; the route answers", model_id)
            return None
        return orjson.dumps(prediction_body(prediction), option=orjson.OPT_SERIALIZE_NUMPY)


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body as far as it came in one message: (bytes, more_to_come)."""
    message = await receive()
    if message["type"] != "http.request":
        return b"", True
    body: bytes = message.get("body", b"")
    return body, bool(message.get("more_body", False))


def replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """A receive that yields what was already read, then whatever is still to come."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replaying


async def send_json(send: Send, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
