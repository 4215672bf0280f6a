"""The Open Inference Protocol v2 (KServe / Triton / MLServer), beside the native API.

Code written for those servers works here by changing the URL: health, server and model
metadata, model readiness and inference, each also under `/versions/1` (a model has one
version until versioning exists). The wire format is `service/api/open_inference.py`; the
prediction is the native one (`service/api/prediction.py`). Errors take the protocol's shape,
`{"error": sentence}` (with our `detail` beside it), and its statuses: 400 for a request that
cannot be served, 404 for an unknown model or version.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from service import PRODUCT_NAME, __version__
from service.api.deps import DatabaseDep, PrincipalDep, StateDep
from service.api.error_handlers import CLIENT_CLOSED_REQUEST, routes_rendering_errors
from service.api.open_inference import HEADER_LENGTH, parse_infer_request
from service.api.openapi import schema_ref
from service.api.prediction import ready_predictor, run_prediction
from service.api.protocol_schemas import (
    V2InferenceRequest,
    V2InferenceResponse,
    V2ModelMetadata,
    V2ModelReady,
    V2ServerLive,
    V2ServerMetadata,
    V2ServerReady,
    V2TensorMetadata,
)
from service.api.routes.health import check_database
from service.api.v2_tensors import (
    INPUT_NAME,
    MODEL_VERSION,
    infer_answer,
    model_inputs,
    output_signature,
    select_outputs,
)
from service.errors import NotFound, ServiceError
from service.schemas import ErrorOut

log = logging.getLogger("service.api")

# Statuses the protocol gives their own meaning; any other client error is a 400 there.
KEPT_STATUSES = frozenset({401, 404, 413, 429})


def protocol_error(exc: ServiceError) -> JSONResponse:
    status = exc.status_code
    if 400 <= status < 500 and status not in KEPT_STATUSES:
        status = 400
    return JSONResponse(
        {"error": exc.detail, "detail": exc.detail},
        status_code=status,
        headers=exc.response_headers(),
    )


router = APIRouter(
    prefix="/v2",
    tags=["open inference protocol v2"],
    route_class=routes_rendering_errors(protocol_error),
)


@router.get("")
async def server_metadata() -> V2ServerMetadata:
    """The server's name, version and protocol extensions."""
    return V2ServerMetadata(
        name=PRODUCT_NAME, version=__version__, extensions=["binary_tensor_data"]
    )


@router.get("/health/live")
async def server_live() -> V2ServerLive:
    """200 while the process serves requests."""
    return V2ServerLive(live=True)


@router.get("/health/ready")
def server_ready(db: DatabaseDep) -> V2ServerReady:
    """200 when this process can reach the database (where every model lives)."""
    check_database(db)
    return V2ServerReady(ready=True)


def check_version(model_id: str, version: str) -> None:
    if version != MODEL_VERSION:
        raise NotFound(f"model {model_id} has no version {version}; its one version is 1")


MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The model is not ready, or the request is invalid"},
    404: {"model": ErrorOut, "description": "No such model, or no such version of it"},
}
INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": schema_ref(V2InferenceRequest)},
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": "JSON, then tensor bytes: the binary tensor data extension "
                    "(the Inference-Header-Content-Length header says where the JSON ends).",
                }
            },
        },
    }
}


# The answer is written as bytes (service/api/open_inference.py); the schema documents it.
INFER_ANSWERS: dict[int | str, dict[str, Any]] = {
    **MODEL_ERRORS,
    200: {
        "description": "The outputs: JSON, or with binary outputs JSON then tensor bytes "
        "(Inference-Header-Content-Length says where the JSON ends).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


@router.get("/models/{model_id}", responses=MODEL_ERRORS)
async def model_metadata(
    model_id: str, state: StateDep, principal: PrincipalDep
) -> V2ModelMetadata:
    """The model's inputs and outputs: names, datatypes and shapes (-1: any number of rows)."""
    predictor = await ready_predictor(state, principal, model_id)
    return V2ModelMetadata(
        name=model_id,
        versions=[MODEL_VERSION],
        platform="pytorch",
        inputs=[
            V2TensorMetadata(name=INPUT_NAME, datatype="FP32", shape=[-1, predictor.n_features])
        ],
        outputs=[
            V2TensorMetadata(name=name, datatype=datatype, shape=shape)
            for name, datatype, shape in output_signature(predictor)
        ],
    )


@router.get("/models/{model_id}/versions/{version}", responses=MODEL_ERRORS)
async def model_version_metadata(
    model_id: str, version: str, state: StateDep, principal: PrincipalDep
) -> V2ModelMetadata:
    """The model's metadata; its one version is 1."""
    check_version(model_id, version)
    return await model_metadata(model_id, state, principal)


@router.get("/models/{model_id}/ready", responses=MODEL_ERRORS)
async def model_ready(model_id: str, state: StateDep, principal: PrincipalDep) -> V2ModelReady:
    """200 when the model answers inferences; 400 while its job has not succeeded."""
    await ready_predictor(state, principal, model_id)
    return V2ModelReady(name=model_id, ready=True)


@router.get("/models/{model_id}/versions/{version}/ready", responses=MODEL_ERRORS)
async def model_version_ready(
    model_id: str, version: str, state: StateDep, principal: PrincipalDep
) -> V2ModelReady:
    """Readiness of the model's version 1 (its only one)."""
    check_version(model_id, version)
    return await model_ready(model_id, state, principal)


@router.post(
    "/models/{model_id}/infer",
    response_model=V2InferenceResponse,
    responses=INFER_ANSWERS,
    openapi_extra=INFER_BODY,
)
async def infer(
    model_id: str, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    """Inference on one input tensor `inputs` of shape [rows, features], JSON or binary.

    Regression models answer `predictions` [rows, outputs]; classifiers `labels` [rows]
    (INT64, or BYTES for string labels) and `probabilities` [rows, classes], all FP32."""
    body = await request.body()
    infer_request = await run_in_threadpool(
        parse_infer_request, body, request.headers.get(HEADER_LENGTH)
    )
    predictor = await ready_predictor(state, principal, model_id)
    inputs = model_inputs(infer_request, predictor)
    wanted = select_outputs(infer_request, predictor)  # an unknown one is refused before work
    prediction = await run_prediction(request, state, predictor, inputs)
    if prediction is None:
        log.info("v2 infer for model %s: the client left; its work stopped", model_id)
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    answer = await run_in_threadpool(infer_answer, infer_request, predictor, prediction, wanted)
    return Response(answer.payload, headers=answer.headers)


@router.post(
    "/models/{model_id}/versions/{version}/infer",
    response_model=V2InferenceResponse,
    responses=INFER_ANSWERS,
    openapi_extra=INFER_BODY,
)
async def infer_version(
    model_id: str, version: str, request: Request, state: StateDep, principal: PrincipalDep
) -> Response:
    """Inference on the model's version 1 (its only one)."""
    check_version(model_id, version)
    return await infer(model_id, request, state, principal)
