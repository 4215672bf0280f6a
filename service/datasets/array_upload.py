"""Uploads that arrive as arrays: an .npz archive (x, y, optional feature_names) or a JSON body
of the shape a job's inline data has. Both become the same stored form as a CSV.

An .npz is read with allow_pickle=False (an object array is refused, never unpickled), and each
member's declared shape is checked before it is decompressed, so a small archive cannot inflate
into gigabytes of memory.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from service.datasets.assemble import BuiltDataset, assemble
from service.datasets.columns import FeatureSpill
from service.datasets.limits import MAX_NAME_CHARS, UploadLimits
from service.datasets.target import Target, label_target, numeric_target, texts
from service.errors import InvalidInput
from service.schemas import DatasetCreate

# What a damaged archive raises as it is opened or read.
UNREADABLE = (ValueError, OSError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error)
# Rows converted and spilled at a time, so float64 copies of the input stay small.
CHUNK_ROWS = 65_536
MEMBERS = ("x", "y", "feature_names")
NUMERIC_KINDS = "iuf"  # signed, unsigned, float: booleans, text and objects are refused


def row_of(row: int, column: str) -> str:
    return f"row {row + 1}, column {column!r}"


def default_feature_names(n_features: int) -> list[str]:
    return [f"x{i}" for i in range(n_features)]


def target_columns(target: str, width: int) -> list[str]:
    return [target] if width == 1 else [f"{target}{i}" for i in range(width)]


def read_npz(file: BinaryIO, target: str, limits: UploadLimits, folder: Path) -> BuiltDataset:
    try:
        archive = np.load(file, allow_pickle=False)
    except UNREADABLE as exc:
        raise InvalidInput(f"the body is not an .npz archive (numpy.savez): {exc}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidInput(
            "send an .npz archive (numpy.savez) holding arrays x and y, not a single array"
        )
    with archive:
        members = set(archive.files)
        unknown = sorted(members - set(MEMBERS))
        missing = [name for name in ("x", "y") if name not in members]
        if unknown or missing:
            raise InvalidInput(
                "the .npz must hold arrays x (rows of features) and y (the target), and "
                "optionally feature_names; "
                + (f"it lacks {', '.join(missing)}" if missing else f"unknown: {unknown}")
            )
        shapes = {name: _declared_shape(archive, name, limits) for name in members}
        _check_shapes(shapes, limits)
        x, y = _load(archive, "x"), _load(archive, "y")
        names = _load(archive, "feature_names") if "feature_names" in members else None
    if x.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput(f"x must hold numbers, not {x.dtype} values")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind != "U":
            raise InvalidInput("feature_names must be a 1-D array of strings")
        feature_names = check_feature_names([str(name) for name in names], x.shape[1])
    else:
        feature_names = default_feature_names(x.shape[1])
    return build(x, _npz_target(y, target, limits), feature_names, limits, folder)


def read_json(body: DatasetCreate, target: str, limits: UploadLimits, folder: Path) -> BuiltDataset:
    x = np.asarray(body.x, dtype=np.float64)
    problem = limits.shape_problem(*x.shape)
    if problem:
        raise InvalidInput(f"the dataset has {problem}")
    names = body.feature_names or default_feature_names(x.shape[1])
    return build(x, _json_target(body.y, target, limits), names, limits, folder)


def build(
    x: np.ndarray, target: Target, names: list[str], limits: UploadLimits, folder: Path
) -> BuiltDataset:
    spill = FeatureSpill(names, limits, folder, row_of)
    try:
        for start in range(0, len(x), CHUNK_ROWS):
            spill.add(np.asarray(x[start : start + CHUNK_ROWS], dtype=np.float64))
    finally:
        spill.close()
    return assemble(spill, target, folder)


def check_feature_names(names: list[str], n_features: int) -> list[str]:
    if len(names) != n_features:
        raise InvalidInput(f"feature_names has {len(names)} names but x has {n_features} columns")
    if len(set(names)) != len(names):
        raise InvalidInput("feature_names must not repeat a name")
    for name in names:
        if not name or len(name) > MAX_NAME_CHARS:
            raise InvalidInput(
                f"feature name {name[:MAX_NAME_CHARS]!r} must have 1 to {MAX_NAME_CHARS} characters"
            )
    return names


def _declared_shape(
    archive: np.lib.npyio.NpzFile, name: str, limits: UploadLimits
) -> tuple[int, ...]:
    """A member's shape from its header, before any of its data is read."""
    member = f"{name}.npy"
    assert archive.zip is not None, "an open archive"
    info = archive.zip.getinfo(member)
    if info.file_size > limits.max_bytes:
        raise InvalidInput(
            f"{name} inflates to {info.file_size} bytes, above the upload limit of "
            f"{limits.max_bytes} (SERVICE_MAX_DATASET_BYTES)"
        )
    try:
        with archive.zip.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except UNREADABLE as exc:
        raise InvalidInput(f"{name} is not a readable array: {exc}") from None
    if dtype.hasobject:
        raise InvalidInput(f"{name} holds Python objects; send numbers (or strings for labels)")
    return tuple(int(n) for n in shape)


def _check_shapes(shapes: dict[str, tuple[int, ...]], limits: UploadLimits) -> None:
    x, y = shapes["x"], shapes["y"]
    if len(x) != 2 or 0 in x:
        raise InvalidInput(f"x must be a non-empty 2-D array (rows, features), not of shape {x}")
    problem = limits.shape_problem(*x)
    if problem:
        raise InvalidInput(f"the dataset has {problem}")
    width_ok = len(y) == 1 or (len(y) == 2 and 1 <= y[1] <= limits.max_features)
    if not width_ok or y[0] != x[0]:
        raise InvalidInput(
            f"y must have one row per row of x ({x[0]}), as a 1-D array or 2-D (rows, outputs); "
            f"its shape is {y}"
        )


def _load(archive: np.lib.npyio.NpzFile, name: str) -> np.ndarray:
    try:
        values: np.ndarray = archive[name]
    except UNREADABLE as exc:
        raise InvalidInput(f"{name} cannot be read from the .npz: {exc}") from None
    return values


def _npz_target(y: np.ndarray, target: str, limits: UploadLimits) -> Target:
    if y.dtype.kind == "U":
        if y.ndim != 1:
            raise InvalidInput("labels in y must be a 1-D array, one label per row")
        return label_target(target, texts([str(label) for label in y.tolist()]), limits, row_of)
    if y.dtype.kind not in NUMERIC_KINDS:
        raise InvalidInput(f"y must hold numbers, or strings as labels, not {y.dtype} values")
    matrix = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    return numeric_target(target, target_columns(target, matrix.shape[1]), matrix, limits, row_of)


def _json_target(y: list[Any], target: str, limits: UploadLimits) -> Target:
    if isinstance(y[0], list):
        matrix = np.asarray(y, dtype=np.float64)
        return numeric_target(
            target, target_columns(target, matrix.shape[1]), matrix, limits, row_of
        )
    is_text = [isinstance(value, str) for value in y]
    if all(is_text):
        return label_target(target, texts(y), limits, row_of)
    if any(is_text):
        raise InvalidInput("y mixes labels and numbers: send all labels (str) or all numbers")
    matrix = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    return numeric_target(target, [target], matrix, limits, row_of)
