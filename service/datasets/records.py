"""Datasets in the database: store an upload, list, read and delete them.

A dataset belongs to the API key that uploaded it, as a job does: another key's dataset is
reported as not found. Its bytes live where the service keeps blobs (the row, or the blob store),
written before the row that names them commits and deleted after the row is gone, as a job's.

The bytes go from the upload's file to their place without being read into memory whole: to a
blob store file by a streamed copy, and into a SQLite row through SQLite's incremental blob
writes (the row is inserted with a zero-filled blob of the right size, which is then filled
in place, in the same transaction). PostgreSQL has no such path for a bytea value: there the
file is read and sent as one value.
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, text
from sqlalchemy.orm import Session

from service import quota
from service.datasets.assemble import BuiltDataset
from service.errors import Conflict, InvalidInput, NotFound
from service.storage import blobs
from service.storage.blobs import BlobStore
from service.storage.db import Database, retry_transient
from service.storage.models import ACTIVE_STATUSES, DatasetRecord, Job, utcnow
from service.tuning import DATABASE_VALUE_LIMIT

# Active jobs named in the answer to a refused delete.
LISTED_JOBS = 5
# Bytes copied into a SQLite blob at a time.
WRITE_CHUNK_BYTES = 4 * 1024 * 1024


def store(
    db: Database, blob_store: BlobStore, built: BuiltDataset, owner: str, name: str | None,
    limits: quota.Quota,
) -> DatasetRecord:  # fmt: skip
    """Store a built dataset for `owner`; QuotaExceeded (nothing stored) past its quota."""
    if blob_store.external is None and built.size_bytes > DATABASE_VALUE_LIMIT:
        raise InvalidInput(
            f"the dataset takes {built.size_bytes} bytes stored, more than the database keeps in "
            f"one value ({DATABASE_VALUE_LIMIT}); the operator can configure a blob store "
            "(SERVICE_BLOB_STORE_URL) for data this large"
        )
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "owner": owner,
        "name": name,
        "n_rows": built.n_rows,
        "n_columns": built.n_columns,
        "target": built.target,
        "feature_names": built.feature_names,
        "columns": built.columns,
        "classes": built.classes,
        "size_bytes": built.size_bytes,
        "created_at": utcnow(),
        "data_ref": None,
        "data_ref_size": 0,
    }
    if blob_store.external is None:
        _insert(db, row, limits, built.path)
        return DatasetRecord(**row)
    # Written before the row that names it commits: a crash in between leaves an orphan file
    # (swept later), never a row without its data.
    placed = blob_store.place_file(blobs.dataset_data_key(row["id"]), built.path)
    row.update(data_ref=placed.ref, data_ref_size=placed.ref_size)
    try:
        _insert(db, row, limits, None)
    except BaseException:
        blob_store.discard([placed.ref])
        raise
    return DatasetRecord(**row)


@retry_transient
def _insert(db: Database, row: dict[str, Any], limits: quota.Quota, data: Path | None) -> None:
    """Insert the row; with `data`, the row holds that file's bytes."""
    with db.write() as session:
        quota.check_storage(session, limits, row["owner"], row["size_bytes"], "this dataset")
        if data is None:
            session.execute(insert(DatasetRecord).values(**row, data=b""))
        elif session.get_bind().dialect.name == "sqlite":
            size = data.stat().st_size
            session.execute(insert(DatasetRecord).values(**row, data=func.zeroblob(size)))
            _fill_sqlite_blob(session, row["id"], data)
        else:
            session.execute(insert(DatasetRecord).values(**row, data=data.read_bytes()))


def _fill_sqlite_blob(session: Session, dataset_id: str, data: Path) -> None:
    """Copy the file into the zero-filled blob of the dataset's new row, a chunk at a time."""
    rowid = session.scalar(text("SELECT rowid FROM datasets WHERE id = :id"), {"id": dataset_id})
    # The session's own connection, so the writes belong to its transaction.
    connection = session.connection().connection.driver_connection
    assert isinstance(connection, sqlite3.Connection) and rowid is not None
    with connection.blobopen("datasets", "data", rowid) as blob, open(data, "rb") as source:
        while chunk := source.read(WRITE_CHUNK_BYTES):
            blob.write(chunk)


def visible(record: DatasetRecord | None, owner: str | None) -> bool:
    """Whether a caller that sees `owner`'s datasets (None: every owner's) may see it."""
    return record is not None and (owner is None or record.owner == owner)


@retry_transient
def get(db: Database, dataset_id: str, owner: str | None) -> DatasetRecord:
    with db.read() as session:
        record = session.get(DatasetRecord, dataset_id)
    if record is None or not visible(record, owner):
        raise NotFound(f"no dataset with id {dataset_id}")
    return record


@retry_transient
def listing(
    db: Database, owner: str | None, limit: int, offset: int
) -> tuple[int, list[DatasetRecord]]:
    """(how many datasets the caller sees, a page of them, newest first)."""
    conditions = [] if owner is None else [DatasetRecord.owner == owner]
    with db.read() as session:
        total = session.scalar(select(func.count()).select_from(DatasetRecord).where(*conditions))
        page = session.scalars(
            select(DatasetRecord)
            .where(*conditions)
            .order_by(DatasetRecord.created_at.desc(), DatasetRecord.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return int(total or 0), list(page)


def remove(db: Database, blob_store: BlobStore, dataset_id: str, owner: str | None) -> None:
    """Delete a dataset that no queued or running job trains from (Conflict otherwise). Jobs
    that trained from it keep their models; their reference to it is cleared."""
    ref = _delete_row(db, dataset_id, owner)
    # Only once no row names it: a crash before this line leaves an orphan, not lost data.
    blob_store.discard([ref])
    db.reclaim_free_pages()


@retry_transient
def _delete_row(db: Database, dataset_id: str, owner: str | None) -> str | None:
    with db.write() as session:
        # Locked (PostgreSQL; SQLite's one writer needs nothing) so that a job submitted
        # meanwhile either commits first, and is counted below, or waits and finds it gone.
        record = session.scalar(
            select(DatasetRecord).where(DatasetRecord.id == dataset_id).with_for_update()
        )
        if record is None or not visible(record, owner):
            raise NotFound(f"no dataset with id {dataset_id}")
        active = session.scalars(
            select(Job.id)
            .where(Job.dataset_id == dataset_id, Job.status.in_(ACTIVE_STATUSES))
            .order_by(Job.created_at)
            .limit(LISTED_JOBS + 1)
        ).all()
        if active:
            more = " and more" if len(active) > LISTED_JOBS else ""
            listed = ", ".join(active[:LISTED_JOBS]) + more
            raise Conflict(
                f"dataset {dataset_id} is in use by queued or running jobs ({listed}); cancel "
                "them or wait for them to end, then delete it"
            )
        ref = record.data_ref
        session.execute(delete(DatasetRecord).where(DatasetRecord.id == dataset_id))
    return ref
