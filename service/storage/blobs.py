"""Where training data and model weights live: in the database's own rows (the default), or as
files in a blob store that every machine mounts (SERVICE_BLOB_STORE_URL=file:///path), so a
1 GB dataset does not bloat the jobs table. docs/blob-store.md has the layout and guarantees.

A row always says where its blob is. `jobs.data_ref` / `models.weights_ref` hold the blob's key
in the store (the blob column then holds b"") and `*_ref_size` its size, which the quota counts;
a NULL ref means the bytes are in the row. So a process reads any row whatever the setting it
runs with, and switching the setting on moves nothing: old rows keep their bytes.

Ordering keeps every reference good: a blob is written (and fsynced) before the row that names
it commits, and deleted only after the row that named it is gone. A crash in between leaves an
orphan file, which `retention.sweep_orphan_blobs` removes; never a row without its blob.

    CorruptBlob                 stored bytes that cannot be read back as what was written
    ├── MissingBlob             a blob store file that is missing or unreadable
    └── InvalidBlobKey          a key that could name a file outside the store (also ValueError)
    BadBlobStoreUrl             a setting that cannot work: the process refuses to start
    BlobStoreUnavailable        a write that failed (disk full, mount gone): 503, retry
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import DatabaseUnavailable
from service.storage.db import Database
from service.storage.models import DatasetRecord, Job, Model

log = logging.getLogger("service.blobs")

# A key is a relative path of plain names: each starts with a letter or digit (so never ".",
# "..", or a hidden temporary file) and holds only letters, digits, '.', '_' and '-'. No key can
# therefore leave the store's root, whatever a row says.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*")
MAX_KEY_CHARS = 200  # the ref columns' width
FILE_MODE = 0o600
FOLDER_MODE = 0o700
# Temporary files start with a dot, which no key may: a half-written blob is never a blob.
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"
TEMP_NAME = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]*\.[0-9a-f]{32}\.tmp")
# A file stored from disk is copied this much at a time.
COPY_CHUNK_BYTES = 4 * 1024 * 1024


class CorruptBlob(Exception):
    """Stored bytes that cannot be read back as what was written: not the safetensors we wrote,
    or a blob store file that is missing or unreadable."""


class MissingBlob(CorruptBlob):
    """A blob the database names but the blob store cannot give back."""


class InvalidBlobKey(CorruptBlob, ValueError):
    """A key that is not a plain relative path: refused before any file is touched."""


class BadBlobStoreUrl(ValueError):
    """SERVICE_BLOB_STORE_URL names no store this process can use."""


class BlobStoreUnavailable(DatabaseUnavailable):
    """The blob store refused a write (disk full, mount gone, permissions): like a database
    that is unreachable, nothing was stored and the client may retry."""


def check_key(key: str) -> str:
    if len(key) > MAX_KEY_CHARS or not KEY_PATTERN.fullmatch(key):
        raise InvalidBlobKey(f"{key[:MAX_KEY_CHARS]!r} is not a blob key")
    return key


class ExternalStore(Protocol):
    """Blobs outside the database, by key. Implementations: FileBlobStore (file://)."""

    @property
    def url(self) -> str: ...

    def put(self, key: str, blob: bytes) -> None:
        """Store `blob` under `key`, replacing any blob there, all or nothing."""

    def put_file(self, key: str, path: Path) -> None:
        """Store the file at `path` under `key`, as put does, without reading it into memory."""

    def get(self, key: str) -> bytes:
        """The blob under `key`; MissingBlob when there is none or it cannot be read."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob under `key`; one already gone is no error."""

    def keys(self, prefix: str, older_than: float) -> Iterator[str]:
        """Keys under `prefix` of the blobs last written before `older_than` (seconds since
        the epoch)."""
        ...

    def drop_unfinished_writes(self, prefix: str, older_than: float) -> int:
        """Remove what writes under `prefix` that died midway left, begun before `older_than`;
        how many."""
        ...


@dataclass(frozen=True)
class FileBlobStore:
    """Blobs as files under `root`, one per key (the key is the path below the root).

    Writes are atomic: a temporary file in the blob's own folder, fsynced, then renamed over
    the blob and the folder fsynced, so a reader (on any machine) sees the old blob or the new
    one, never part of one, and a crash loses at most the blob being written. Files are 0600
    and folders 0700 whatever the umask: they hold users' data.
    """

    root: Path

    @property
    def url(self) -> str:
        return self.root.as_uri()

    def path_of(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, blob: bytes) -> None:
        self._write(key, lambda file: file.write(blob))

    def put_file(self, key: str, path: Path) -> None:
        def copy(file: BinaryIO) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, file, COPY_CHUNK_BYTES)

        self._write(key, copy)

    def _write(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        path = self.path_of(key)
        try:
            self._make_folders(path.parent)
            temp = path.with_name(f"{TEMP_PREFIX}{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            try:
                with os.fdopen(descriptor, "wb") as file:
                    write(file)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            _fsync_folder(path.parent)
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"the blob store could not store {key}: {exc.strerror or exc}"
            ) from exc

    def get(self, key: str) -> bytes:
        try:
            return self.path_of(key).read_bytes()
        except FileNotFoundError:
            raise MissingBlob(f"{key} is missing from the blob store") from None
        except OSError as exc:
            raise MissingBlob(f"{key} cannot be read from the blob store: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        # The blob's own folder (jobs/<id>) goes with its last blob; the top-level folders stay,
        # so a concurrent write never finds the folder above its own gone.
        if path.parent.parent != self.root:
            # Not empty (another blob of the same model), or already gone: it stays.
            with contextlib.suppress(OSError):
                path.parent.rmdir()

    def keys(self, prefix: str, older_than: float) -> Iterator[str]:
        for path in self._files(prefix):
            if not path.name.startswith(TEMP_PREFIX) and _modified(path) < older_than:
                yield path.relative_to(self.root).as_posix()

    def drop_unfinished_writes(self, prefix: str, older_than: float) -> int:
        dropped = 0
        for path in self._files(prefix):
            if TEMP_NAME.fullmatch(path.name) and _modified(path) < older_than:
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    def _files(self, prefix: str) -> Iterator[Path]:
        for folder, _, names in os.walk(self.path_of(prefix)):  # symlinks are not followed
            for name in names:
                yield Path(folder, name)

    def _make_folders(self, folder: Path) -> None:
        """Create the folders down to `folder`, each made durable in its parent."""
        missing = []
        while not folder.exists() and folder != self.root:
            missing.append(folder)
            folder = folder.parent
        for created in reversed(missing):
            try:
                created.mkdir(mode=FOLDER_MODE)
            except FileExistsError:  # another process made it meanwhile
                continue
            _fsync_folder(created.parent)


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # deleted while we looked: not a candidate for anything
        return float("inf")


def _fsync_folder(folder: Path) -> None:
    """Make a rename or a new entry in `folder` survive a power cut."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class PlacedBlob:
    """Where a blob went, as its row records it: the bytes for the row's blob column (b"" when
    the blob store holds them), the key in the store, and the size kept there."""

    inline: bytes
    ref: str | None
    ref_size: int


@dataclass(frozen=True)
class BlobStore:
    """Where this process puts new blobs, and how it reads and removes any stored one.

    Without `external`, new blobs go into the database's rows; a row that names a blob store
    key is then unreadable here, and says so (MissingBlob), rather than being misread.
    """

    external: ExternalStore | None = None

    @property
    def url(self) -> str:
        return "" if self.external is None else self.external.url

    def place(self, key: str, blob: bytes) -> PlacedBlob:
        if self.external is None:
            return PlacedBlob(blob, None, 0)
        self.external.put(key, blob)
        return PlacedBlob(b"", key, len(blob))

    def place_file(self, key: str, path: Path) -> PlacedBlob:
        """Put the file at `path` in the blob store; only for a store that is not the
        database (a row's own bytes are written with the row)."""
        if self.external is None:
            raise ValueError("blobs kept in the database are written with their row")
        self.external.put_file(key, path)
        return PlacedBlob(b"", key, path.stat().st_size)

    def fetch(self, ref: str | None, inline: bytes) -> bytes:
        """A stored blob: the row's own bytes, or the store's under `ref`."""
        if ref is None:
            return inline
        if self.external is None:
            raise MissingBlob(
                f"{ref} is kept in a blob store, and this process has none "
                "(SERVICE_BLOB_STORE_URL is empty)"
            )
        return self.external.get(ref)

    def discard(self, refs: Iterable[str | None]) -> None:
        """Remove blobs no row names any more (call it after that commit). Best effort: a blob
        left behind is an orphan, which the sweep removes later."""
        for ref in refs:
            if ref is None:
                continue
            if self.external is None:
                log.warning("%s is kept in a blob store this process has none of: left there", ref)
                continue
            try:
                self.external.delete(ref)
            except (OSError, InvalidBlobKey) as exc:
                log.warning("could not delete %s from the blob store: %s", ref, exc)


IN_DATABASE = BlobStore()


def open_blob_store(url: str) -> BlobStore:
    """The store SERVICE_BLOB_STORE_URL names: "" keeps blobs in the database, file:///path
    keeps them under that folder. Anything else raises BadBlobStoreUrl, so a process with a
    setting that cannot work stops at start-up rather than at its first job."""
    if not url:
        return IN_DATABASE
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise BadBlobStoreUrl(
            f"SERVICE_BLOB_STORE_URL={url!r}: unknown scheme {parts.scheme or '(none)'!r}; use "
            "file:///absolute/path, or leave it empty to keep blobs in the database"
        )
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise BadBlobStoreUrl(
            f"SERVICE_BLOB_STORE_URL={url!r}: a file URL names a local folder, as "
            "file:///absolute/path (three slashes), with no host, query or fragment"
        )
    root = Path(unquote(parts.path))
    if not root.is_absolute():
        raise BadBlobStoreUrl(f"SERVICE_BLOB_STORE_URL={url!r}: the folder must be absolute")
    _check_root(url, root)
    return BlobStore(FileBlobStore(root))


def _check_root(url: str, root: Path) -> None:
    # Never created here: a folder that is missing is most often a shared mount that is not
    # mounted, and blobs written to the local disk beneath it would be lost to other machines.
    if not root.is_dir():
        raise BadBlobStoreUrl(
            f"SERVICE_BLOB_STORE_URL={url!r}: {root} is not a folder; create it (on storage "
            "that every API and worker machine mounts at this path) or fix the URL"
        )
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise BadBlobStoreUrl(
            f"SERVICE_BLOB_STORE_URL={url!r}: this process may not read and write {root}"
        )
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "the blob store %s is open to other users (mode %o); the blobs themselves are "
            "private, but consider chmod 700",
            root,
            mode,
        )


# -- the rows that name blobs --------------------------------------------------------------


# The top-level folders of the layout, and the keys this service writes in them: the orphan sweep
# deletes nothing else, even in a folder shared by mistake.
LAYOUT_FOLDERS = ("jobs", "models", "datasets")
OWN_KEY = re.compile(
    r"jobs/[A-Za-z0-9-]{1,64}/data\.safetensors"
    r"|models/[A-Za-z0-9-]{1,64}/weights-[0-9a-f]{16}\.safetensors"
    r"|datasets/[A-Za-z0-9-]{1,64}/data\.safetensors"
)


def job_data_key(job_id: str) -> str:
    return f"jobs/{job_id}/data.safetensors"


def dataset_data_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/data.safetensors"


def weights_key(model_id: str) -> str:
    """A fresh key for each write: a worker that lost its lease must not overwrite, and then
    delete, the weights its successor stored under the same model id."""
    return f"models/{model_id}/weights-{uuid.uuid4().hex[:16]}.safetensors"


def stow_job_data(blob_store: BlobStore, job: Job) -> None:
    """Move a new job's data (in `job.data`) to where `blob_store` keeps blobs. Idempotent, so
    a retried transaction does not lose the data it already placed. A job that trains from an
    uploaded dataset has no data of its own to place."""
    if job.data_ref is not None or job.dataset_id is not None:
        return
    placed = blob_store.place(job_data_key(job.id), job.data)
    job.data, job.data_ref, job.data_ref_size = placed.inline, placed.ref, placed.ref_size


def forget_job_data(blob_store: BlobStore, job: Job) -> None:
    """The job was not stored after all (a replay won the race): remove the data placed for it."""
    blob_store.discard([job.data_ref])


def stow_weights(blob_store: BlobStore, model: Model, weights: bytes) -> None:
    """Put a new model's weights where `blob_store` keeps blobs, and record where in `model`."""
    placed = blob_store.place(weights_key(model.id), weights)
    model.weights, model.weights_ref, model.weights_ref_size = (
        placed.inline,
        placed.ref,
        placed.ref_size,
    )


def read_job_data(db: Database, blob_store: BlobStore, job_id: str) -> bytes:
    """A job's training data as stored, wherever it lives."""
    with db.read() as session:
        inline, ref = session.execute(select(Job.data, Job.data_ref).where(Job.id == job_id)).one()
    try:
        return blob_store.fetch(ref, inline)
    except CorruptBlob as exc:
        raise MissingBlob(f"the training data of job {job_id} cannot be read: {exc}") from exc


def read_dataset_data(db: Database, blob_store: BlobStore, dataset_id: str) -> bytes:
    """An uploaded dataset's stored bytes, wherever they live."""
    with db.read() as session:
        row = session.execute(
            select(DatasetRecord.data, DatasetRecord.data_ref).where(DatasetRecord.id == dataset_id)
        ).one_or_none()
    if row is None:
        raise MissingBlob(f"dataset {dataset_id} no longer exists")
    try:
        return blob_store.fetch(row.data_ref, row.data)
    except CorruptBlob as exc:
        raise MissingBlob(f"the data of dataset {dataset_id} cannot be read: {exc}") from exc


def refs_of_jobs(session: Session, job_ids: Sequence[str]) -> list[str]:
    """The blob store keys the jobs' rows name (their data, their models' weights): read them
    before deleting the rows, delete the blobs after that commits."""
    data = session.scalars(
        select(Job.data_ref).where(Job.id.in_(job_ids), Job.data_ref.is_not(None))
    )
    weights = session.scalars(
        select(Model.weights_ref).where(Model.id.in_(job_ids), Model.weights_ref.is_not(None))
    )
    return [ref for ref in (*data, *weights) if ref is not None]


def referenced(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of `keys` some row names."""
    data = session.scalars(select(Job.data_ref).where(Job.data_ref.in_(keys)))
    weights = session.scalars(select(Model.weights_ref).where(Model.weights_ref.in_(keys)))
    datasets = session.scalars(
        select(DatasetRecord.data_ref).where(DatasetRecord.data_ref.in_(keys))
    )
    return {ref for ref in (*data, *weights, *datasets) if ref is not None}
