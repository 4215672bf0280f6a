"""The predict protocols' hot path, answered below the framework.

`POST /models/{id}/predict` (native) and `POST /v2/models/{id}/infer` (the Open Inference
Protocol) are the requests a busy deployment sees most, and FastAPI's layers (routing,
dependency solving, exception wrappers) cost several times the prediction itself. This ASGI
middleware answers the common case directly: a body with a Content-Length within the limit, a
valid key, a model already in this process's cache, valid inputs, a small forward pass.
Everything else (a cache miss, any error at all) continues to the FastAPI route with the body
replayed, so loading, errors and documentation stay in one place. Both paths share the parsers
and writers (`json_io`; `open_inference` and `v2_tensors`) and, from `service.inference`,
`predict`, `prediction_body` and `INLINE_WORK`; the routes import nothing from here.
tests/test_fast_path.py holds each pair to the same bytes.
"""

from __future__ import annotations

import logging
import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.gate import authorization_header, principal_of
from service.api.instrumentation import (
    FAST_PATH_ROUTE,
    NATIVE_PREDICT,
    V2_INFER,
    V2_INFER_VERSIONED,
)
from service.api.json_io import parse_rows
from service.api.open_inference import HEADER_LENGTH, parse_infer_request
from service.api.state import ApiState
from service.api.v2_tensors import infer_answer, model_inputs, select_outputs
from service.errors import ServiceError
from service.inference import Predictor, prediction_body
from service.tuning import INLINE_WORK, OFF_LOOP_PARSE_BYTES

log = logging.getLogger("service.api")

PREDICT_PATH = re.compile(r"^/models/([^/]+)/predict$")
INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/1)?/infer$")
VERSIONED_INFER_SUFFIX = "/versions/1/infer"
JSON_TYPES = (b"application/json",)
JSON_HEADERS = {"content-type": "application/json"}
# Failures of the request itself, which the route reports to the client: not worth a warning.
CLIENT_ERRORS = (ServiceError, ValueError)


class PredictFastPath:
    def __init__(self, app: ASGIApp, state: ApiState, max_body_bytes: int) -> None:
        self.app = app
        self.state = state
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        post = scope["type"] == "http" and scope["method"] == "POST"
        native = PREDICT_PATH.match(scope["path"]) if post else None
        infer = INFER_PATH.match(scope["path"]) if post and native is None else None
        headers = dict(scope["headers"]) if native or infer else {}
        length = headers.get(b"content-length", b"")
        if (
            (native is None and infer is None)
            or not length.isdigit()
            or int(length) > (self.max_body_bytes if native else OFF_LOOP_PARSE_BYTES)
            # v2 bodies are JSON, or JSON then tensor bytes (the binary extension), whatever
            # their Content-Type says: the Inference-Header-Content-Length header tells which.
            or (native and media_type(headers) not in JSON_TYPES)
        ):
            await self.app(scope, receive, send)
            return
        body, more = await read_body(receive)
        if not more:
            if native:
                answer = await self.answer(scope, native.group(1), body)
                sent = None if answer is None else (answer, JSON_HEADERS)
            else:
                assert infer is not None
                sent = await self.answer_infer(scope, infer.group(1), body, headers)
            if sent is not None:
                scope[FAST_PATH_ROUTE] = (
                    NATIVE_PREDICT
                    if native
                    else V2_INFER_VERSIONED
                    if scope["path"].endswith(VERSIONED_INFER_SUFFIX)
                    else V2_INFER
                )
                await send_answer(send, *sent)
                return
        await self.app(scope, replay(body, more, receive), send)

    def _ready(self, scope: Scope, model_id: str) -> Predictor | None:
        """The cached predictor, if the caller may use it; None sends the request on."""
        predictor = self.state.predictors.cached(model_id)
        if predictor is None:
            return None
        principal = principal_of(scope) or self.state.keys.authenticate(authorization_header(scope))
        return predictor if principal.can_see(predictor.owner) else None

    async def answer(self, scope: Scope, model_id: str, body: bytes) -> bytes | None:
        """The native response body, or None when the full route should take the request."""
        try:
            predictor = self._ready(scope, model_id)
            if predictor is None:
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

    async def answer_infer(
        self, scope: Scope, model_id: str, body: bytes, headers: dict[bytes, bytes]
    ) -> tuple[bytes, dict[str, str]] | None:
        """An Open Inference Protocol answer (body, headers), or None for the route."""
        try:
            predictor = self._ready(scope, model_id)
            if predictor is None:
                return None
            length = headers.get(HEADER_LENGTH.encode())
            request = parse_infer_request(body, None if length is None else length.decode())
            inputs = model_inputs(request, predictor)
            wanted = select_outputs(request, predictor)
            if inputs.shape[0] * predictor.n_parameters > INLINE_WORK:
                return None
            self.state.limits.check(predictor, inputs.shape[0])
            prediction = await self.state.batcher.predict(predictor, inputs)
            answer = infer_answer(request, predictor, prediction, wanted)
        except CLIENT_ERRORS as exc:
            log.debug("infer fast path: %s for model %s; the route answers", exc, model_id)
            return None
        except Exception:
            log.exception("infer fast path failed for model %s; the route answers", model_id)
            return None
        return answer.payload, answer.headers


def media_type(headers: dict[bytes, bytes]) -> bytes:
    return headers.get(b"content-type", b"").split(b";")[0].strip()


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


async def send_answer(send: Send, payload: bytes, headers: dict[str, str]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                *((name.encode(), value.encode()) for name, value in headers.items()),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
