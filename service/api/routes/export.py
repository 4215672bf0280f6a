"""A trained model as a file for other runtimes: ONNX, TorchScript or safetensors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from service.api.deps import BlobStoreDep, DatabaseDep, PrincipalDep
from service.export import ExportFormat, export_model
from service.inference import load_stored_model
from service.schemas import ErrorOut

router = APIRouter(prefix="/models", tags=["models"])

FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": "The model file, its metadata inside it.",
    },
    404: {"model": ErrorOut, "description": "No model or job with this id"},
    409: {"model": ErrorOut, "description": "The job has not succeeded (yet)"},
}


@router.get("/{model_id}/export", response_class=Response, responses=FILE)
async def export(
    model_id: str,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    principal: PrincipalDep,
    format: Annotated[
        ExportFormat,
        Query(description="onnx (onnxruntime), torchscript (torch.jit.load) or safetensors."),
    ] = "onnx",
) -> Response:
    """The model as a file other runtimes load, with its scaling baked in: raw inputs in, raw
    outputs out (a classifier gives class probabilities; the labels are in the metadata).

    The metadata (input and output names and shapes, feature names, classes, architecture)
    travels inside the file: ONNX `metadata_props["metadata"]`, TorchScript extra file
    `metadata.json`, safetensors header `metadata`."""
    stored = await run_in_threadpool(load_stored_model, db, model_id, principal.can_see, blob_store)
    exported = await run_in_threadpool(export_model, stored.model, stored.weights, format)
    return Response(
        exported.content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )
