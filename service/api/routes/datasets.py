"""Datasets: upload once (CSV, .npz or JSON), train many jobs from them, list, inspect, delete.

An upload streams to a temporary file (never into memory whole) under its own size limit,
SERVICE_MAX_DATASET_BYTES, and is parsed, checked and stored off the event loop.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from service.api.deps import BlobStoreDep, DatabaseDep, PrincipalDep, SettingsDep
from service.api.error_handlers import invalid_body
from service.config import Settings
from service.datasets import records
from service.datasets.array_upload import read_json, read_npz
from service.datasets.assemble import BuiltDataset
from service.datasets.csv_upload import read_csv
from service.datasets.limits import MAX_NAME_CHARS, UploadLimits
from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.quota import Quota
from service.schemas import MAX_OFFSET, DatasetCreate, DatasetList, DatasetOut, ErrorOut
from service.storage.blobs import BlobStore
from service.storage.db import Database
from service.storage.models import DatasetRecord

router = APIRouter(prefix="/datasets", tags=["datasets"])

CSV = "text/csv"
NPZ_TYPES = ("application/x-npz", "application/octet-stream")
MULTIPART = "multipart/form-data"
# An .npz is a zip archive: a multipart upload's file is told apart from a CSV by this.
ZIP_MAGIC = b"PK\x03\x04"
# Body bytes gathered before each write to the temporary file (writes run off the event loop).
SPOOL_BYTES = 1024 * 1024
# The target's name when arrays (.npz, JSON) are sent without one.
DEFAULT_TARGET = "y"

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No dataset with this id"}
}
BINARY = {"schema": {"type": "string", "format": "binary"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            CSV: BINARY,
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "target": {"type": "string"},
                        "name": {"type": "string"},
                    },
                }
            },
            # An .npz; application/x-npz is taken too, but generic clients (and fuzzers) know
            # how to send octet-stream.
            "application/octet-stream": BINARY,
            "application/json": {"schema": {"$ref": "#/components/schemas/DatasetCreate"}},
        },
    }
}

TargetQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="The target column of a CSV (required); for .npz and JSON, the name the "
        "target is given (default y).",
    ),
]
NameQuery = Annotated[str | None, Query(max_length=200, description="A name to list it by.")]


def body_limits(settings: Settings) -> dict[tuple[str, str], int]:
    """The upload's own body limit, in place of SERVICE_MAX_BODY_BYTES (see body_limit.py)."""
    return {("POST", "/datasets"): settings.max_dataset_bytes}


def dataset_out(record: DatasetRecord) -> DatasetOut:
    return DatasetOut.model_validate(record, from_attributes=True)


@dataclass(frozen=True)
class Upload:
    """Where an upload is stored, and for whom."""

    db: Database
    blob_store: BlobStore
    settings: Settings
    owner: str
    folder: Path

    @property
    def limits(self) -> UploadLimits:
        return UploadLimits.from_settings(self.settings)

    async def store(self, parse: Callable[[], BuiltDataset], name: str | None) -> DatasetOut:
        # Parsing a large file and writing it to the database take seconds of CPU and I/O:
        # in a worker thread, so they never stall other requests.
        return await run_in_threadpool(self.store_now, parse, name)

    def store_now(self, parse: Callable[[], BuiltDataset], name: str | None) -> DatasetOut:
        record = records.store(
            self.db, self.blob_store, parse(), self.owner, name, Quota.from_settings(self.settings)
        )
        return dataset_out(record)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        413: {"model": ErrorOut, "description": "The upload is over its size limit"},
        415: {"model": ErrorOut, "description": "Not CSV, multipart, .npz or JSON"},
        422: {"model": ErrorOut, "description": "The data cannot be read or trained on"},
        429: {"model": ErrorOut, "description": "This API key is at its storage quota"},
    },
    openapi_extra=UPLOAD_BODY,
)
async def upload_dataset(
    http: Request,
    response: Response,
    db: DatabaseDep,
    blob_store: BlobStoreDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    target: TargetQuery = None,
    name: NameQuery = None,
) -> DatasetOut:
    """Upload a dataset: a CSV with a header row (`text/csv`, or `multipart/form-data` with the
    file in the field `file`), an .npz with arrays `x` and `y` (`application/x-npz`), or JSON
    `{"x", "y", "feature_names"?, "name"?}`. Jobs then train from it with `"dataset_id"`."""
    media_type = http.headers.get("content-type", "").split(";")[0].strip().lower()
    folder = Path(tempfile.mkdtemp(prefix="dataset-upload-"))
    try:
        upload = Upload(db, blob_store, settings, principal.owner, folder)
        if media_type == MULTIPART:
            out = await _upload_form(http, upload, target, name)
        elif media_type == CSV or media_type in NPZ_TYPES:
            read = _csv_reader(target) if media_type == CSV else _npz_reader(target)
            with open(upload.folder / "upload", "w+b") as file:
                await spool(http, file)
                out = await upload.store(lambda: read(file, upload), name)
        elif media_type == "application/json" or media_type.endswith("+json"):
            raw = await read_json_body(http, settings)
            out = await run_in_threadpool(_store_json, upload, raw, target, name)
        else:
            raise UnsupportedMediaType(
                "send the dataset as text/csv, multipart/form-data (the file in the field "
                f"'file'), application/x-npz or application/json (got {media_type or 'none'})"
            )
    finally:
        # Off the event loop: unlinking a file of hundreds of megabytes can take a while.
        await run_in_threadpool(shutil.rmtree, folder, True)
    response.headers["Location"] = f"/datasets/{out.id}"
    return out


Reader = Callable[[BinaryIO, Upload], BuiltDataset]


def _csv_reader(target: str | None) -> Reader:
    if target is None:
        raise InvalidInput(
            "name the CSV's target column: POST /datasets?target=COLUMN (or, in a multipart "
            "form, the field 'target')"
        )
    return lambda file, upload: read_csv(file, target, upload.limits, upload.folder)


def _npz_reader(target: str | None) -> Reader:
    label = target or DEFAULT_TARGET
    return lambda file, upload: read_npz(file, label, upload.limits, upload.folder)


async def _upload_form(
    http: Request, upload: Upload, target: str | None, name: str | None
) -> DatasetOut:
    """A multipart form: the file in `file` (spooled to disk by the form parser), `target` and
    `name` as fields or query parameters."""
    form = await http.form(max_files=1, max_fields=2)
    try:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("send the dataset's file in the form field 'file'")
        target = _field(form, "target") or target
        name = _field(form, "name") or name
        head = await file.read(len(ZIP_MAGIC))
        await file.seek(0)
        read = _npz_reader(target) if head == ZIP_MAGIC else _csv_reader(target)
        return await upload.store(lambda: read(file.file, upload), name)
    finally:
        await form.close()


def _field(form: FormData, key: str) -> str | None:
    value = form.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(
            f"the form field {key!r} must be text of 1 to {MAX_NAME_CHARS} characters"
        )
    return value


async def spool(http: Request, file: BinaryIO) -> None:
    """Write the request's body to `file` as it arrives, then rewind it. The body limit
    (service/api/body_limit.py) refuses it with 413 once it passes the upload limit."""
    pending = bytearray()
    async for chunk in http.stream():
        pending += chunk
        if len(pending) >= SPOOL_BYTES:
            await run_in_threadpool(file.write, pending)
            pending = bytearray()
    if pending:
        await run_in_threadpool(file.write, pending)
    file.seek(0)


async def read_json_body(http: Request, settings: Settings) -> bytes:
    """A JSON dataset's body, which is parsed in memory: held to SERVICE_MAX_BODY_BYTES like
    every JSON body; larger data belongs in a CSV or an .npz."""
    limit = settings.max_body_bytes
    too_large = PayloadTooLarge(
        f"a JSON dataset may take up to {limit} bytes (SERVICE_MAX_BODY_BYTES); upload larger "
        f"data as CSV or .npz, up to {settings.max_dataset_bytes} bytes"
    )
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in http.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def _store_json(upload: Upload, raw: bytes, target: str | None, name: str | None) -> DatasetOut:
    """A JSON dataset, validated (seconds for megabytes: in the worker thread) and stored."""
    body = _parse_json(raw)
    label = target or DEFAULT_TARGET
    return upload.store_now(
        lambda: read_json(body, label, upload.limits, upload.folder), body.name or name
    )


def _parse_json(body: bytes) -> DatasetCreate:
    try:
        return DatasetCreate.model_validate_json(body)
    except ValidationError as exc:
        raise invalid_body(exc) from None


@router.get("")
def list_datasets(
    db: DatabaseDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> DatasetList:
    """Datasets, newest first."""
    total, page = records.listing(db, principal.owner_filter, limit, offset)
    return DatasetList(
        datasets=[dataset_out(r) for r in page], total=total, limit=limit, offset=offset
    )


@router.get("/{dataset_id}", responses=NOT_FOUND)
def get_dataset(dataset_id: str, db: DatabaseDep, principal: PrincipalDep) -> DatasetOut:
    return dataset_out(records.get(db, dataset_id, principal.owner_filter))


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "A queued or running job trains from it"},
    },
)
def delete_dataset(
    dataset_id: str, db: DatabaseDep, blob_store: BlobStoreDep, principal: PrincipalDep
) -> Response:
    """Delete a dataset. Refused while a queued or running job trains from it; models trained
    from it stay."""
    records.remove(db, blob_store, dataset_id, principal.owner_filter)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
