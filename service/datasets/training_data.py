"""A job's training data as the worker trains on it, whether the job carries it inline or
trains from an uploaded dataset."""

from __future__ import annotations

import json

import numpy as np
from sqlalchemy import select

from service.storage import blobs
from service.storage.blobs import BlobStore, CorruptBlob
from service.storage.db import Database
from service.storage.models import Job
from service.storage.store import Dataset, decode_arrays, decode_dataset


def sample_rows(n_rows: int, limit: int) -> np.ndarray:
    """At most `limit` of `n_rows` row indices, in order, the same ones every time: what a
    picture of the training data draws."""
    if n_rows <= limit:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(0).choice(n_rows, limit, replace=False))


def load_job_dataset(db: Database, blob_store: BlobStore, job_id: str) -> Dataset:
    with db.read() as session:
        dataset_id, task = session.execute(
            select(Job.dataset_id, Job.task).where(Job.id == job_id)
        ).one()
    if dataset_id is None:
        return decode_dataset(blobs.read_job_data(db, blob_store, job_id))
    blob = blobs.read_dataset_data(db, blob_store, dataset_id)
    return training_dataset(blob, dataset_id, classification=task == "classification")


def training_dataset(blob: bytes, dataset_id: str, *, classification: bool) -> Dataset:
    """A stored dataset as a job of the given task trains on it: for classification, targets
    become indices into the sorted classes, as for inline data."""
    arrays, metadata = decode_arrays(blob, f"the data of dataset {dataset_id}")
    try:
        x, y = arrays["x"], arrays["y"]
        names = json.loads(metadata["feature_names"])
        labels = json.loads(metadata["labels"]) if "labels" in metadata else None
    except (KeyError, ValueError) as exc:
        raise CorruptBlob(f"the data of dataset {dataset_id} lacks {exc}") from exc
    if not classification:
        if labels is not None:  # refused when the job was submitted
            raise CorruptBlob(f"dataset {dataset_id}'s target holds labels, not numbers")
        return Dataset(x=x, y=y, feature_names=names)
    if labels is not None:
        return Dataset(x=x, y=y.astype(np.int64), classes=labels, feature_names=names)
    values = y[:, 0]
    classes = np.unique(values)
    indices = np.searchsorted(classes, values).astype(np.int64)
    return Dataset(x=x, y=indices, classes=[int(c) for c in classes], feature_names=names)
