"""One prediction, whichever protocol asked for it: find the model, apply the limits, then run
the forward pass in the micro-batcher (small) or off the event loop in chunks (large).

The native route, the Open Inference Protocol and the MLflow scoring route differ only in how
they read rows and write answers; everything between goes through here, and below it through
`service.inference.predict`. (The native fast path answers cached small requests before any
route, with the same batcher and the same `predict`.)
"""

from __future__ import annotations

import time

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from service.api.auth import Principal
from service.api.state import ApiState
from service.errors import Overloaded
from service.inference import Prediction, Predictor, predict, row_chunks
from service.tuning import INLINE_WORK


async def ready_predictor(state: ApiState, principal: Principal, model_id: str) -> Predictor:
    """The model's predictor: from this process's cache, or loaded in a worker thread."""
    predictor = state.predictors.cached(model_id)
    if predictor is None or not principal.can_see(predictor.owner):
        predictor = await run_in_threadpool(state.predictors.get, model_id, principal.can_see)
    return predictor


def is_small(predictor: Predictor, inputs: np.ndarray) -> bool:
    """Small enough to run on the event loop, batched with its neighbours."""
    return len(inputs) * predictor.n_parameters <= INLINE_WORK


async def run_prediction(
    request: Request, state: ApiState, predictor: Predictor, inputs: np.ndarray
) -> Prediction | None:
    """The prediction, or None when the client left before a large one finished."""
    state.limits.check(predictor, len(inputs))
    if is_small(predictor, inputs):
        return await state.batcher.predict(predictor, inputs)
    return await predict_off_loop(request, predictor, inputs, state.limits.timeout_seconds)


async def predict_off_loop(
    request: Request, predictor: Predictor, inputs: np.ndarray, timeout_seconds: float
) -> Prediction | None:
    """A big prediction in worker threads, a chunk at a time; None if the client left."""
    deadline = time.monotonic() + timeout_seconds
    parts = []
    for chunk in row_chunks(predictor, inputs):
        if await request.is_disconnected():
            return None
        if time.monotonic() > deadline:
            raise Overloaded(
                f"the prediction ran past its {timeout_seconds:g} s deadline; "
                "send fewer rows per request"
            )
        parts.append(await run_in_threadpool(predict, predictor, chunk))
    return Prediction.join(parts)
