"""MLflow's scoring protocol for every model: `POST /models/{id}/invocations`.

Code written for `mlflow models serve` works by pointing it at `/models/{id}` instead of the
MLflow server's root. The wire format is `service/api/mlflow_scoring.py`; the prediction is the
native one (`service/api/prediction.py`). Errors carry MLflow's `error_code` and `message`
beside our `error` and `detail`, with MLflow's statuses (400 for any body it cannot score).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service.api.deps import PrincipalDep, StateDep
from service.api.error_handlers import CLIENT_CLOSED_REQUEST, routes_rendering_errors
from service.api.json_io import json_response
from service.api.mlflow_scoring import (
    ScoringInput,
    model_columns,
    parse_csv_body,
    parse_json_body,
    predictions_body,
)
from service.api.openapi import schema_ref
from service.api.prediction import ready_predictor, run_prediction
from service.api.protocol_schemas import MlflowPredictions, MlflowScoringRequest
from service.errors import ServiceError, UnsupportedMediaType
from service.schemas import ErrorOut

log = logging.getLogger("service.api")

# MLflow's error codes for the statuses it keeps; every other client error is its BAD_REQUEST.
ERROR_CODES = {
    401: "UNAUTHENTICATED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
}
CSV_TYPES = ("text/csv", "application/csv")


def scoring_error(exc: ServiceError) -> JSONResponse:
    status = exc.status_code
    if 400 <= status < 500 and status not in ERROR_CODES:
        status = 400
    code = ERROR_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
    return JSONResponse(
        {"error_code": code, "message": exc.detail, "error": exc.kind, "detail": exc.detail},
        status_code=status,
        headers=exc.response_headers(),
    )


router = APIRouter(
    prefix="/models", tags=["mlflow scoring"], route_class=routes_rendering_errors(scoring_error)
)

INVOCATIONS_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": schema_ref(MlflowScoringRequest),
                "examples": {
                    "dataframe_split": {
                        "value": {"dataframe_split": {"columns": ["x1", "x2"], "data": [[1, 2]]}}
                    },
                    "dataframe_records": {"value": {"dataframe_records": [{"x1": 1, "x2": 2}]}},
                    "instances": {"value": {"instances": [[1, 2]]}},
                    "inputs": {"value": {"inputs": [[1, 2]]}},
                },
            },
            "text/csv": {"schema": {"type": "string"}, "example": "x1,x2\n1,2\n"},
        },
    }
}


SCORING_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A body that cannot be scored, or a model not ready"},
    404: {"model": ErrorOut, "description": "No model or job with this id"},
}


@router.post(
    "/{model_id}/invocations",
    response_model=MlflowPredictions,  # documents the answer, written as bytes below
    openapi_extra=INVOCATIONS_BODY,
    responses={
        **SCORING_ERRORS,
        415: {"model": ErrorOut, "description": "The body is neither JSON nor CSV"},
    },
)
async def invocations(
    model_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    """Score rows as `mlflow models serve` does: `{"predictions": [...]}`.

    JSON bodies hold one of `dataframe_split`, `dataframe_records`, `instances` or `inputs`;
    `text/csv` bodies need a header row. Named columns are matched to the model's feature names
    when it has them (from `data.feature_names` at training), otherwise by position."""
    scoring = await read_scoring_input(request)
    predictor = await ready_predictor(state, principal, model_id)
    inputs = model_columns(scoring, predictor.feature_names, model_id)
    prediction = await run_prediction(request, state, predictor, inputs)
    if prediction is None:
        log.info("invocations for model %s: the client left; its work stopped", model_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    body = predictions_body(prediction.values, prediction.labels)
    return await run_in_threadpool(json_response, body)


@router.get(
    "/{model_id}/ping",
    response_class=Response,
    responses={
        **SCORING_ERRORS,
        200: {"description": "The model is ready (a blank body, as MLflow's /ping sends)."},
    },
)
async def ping(model_id: str, state: StateDep, principal: PrincipalDep) -> Response:
    """200 when the model answers invocations, as MLflow's `/ping` does for its one model."""
    await ready_predictor(state, principal, model_id)
    return Response("\n", media_type="application/json")


async def read_scoring_input(request: Request) -> ScoringInput:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ("application/json", *CSV_TYPES):
        raise UnsupportedMediaType(
            "send JSON (application/json) or CSV (text/csv) rows to score "
            f"(got {media_type or 'no content type'})"
        )
    body = await request.body()
    parse = parse_json_body if media_type == "application/json" else parse_csv_body
    return await run_in_threadpool(parse, body)
