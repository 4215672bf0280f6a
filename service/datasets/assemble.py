"""An upload's checked features and target, written as the one stored form of a dataset.

The stored form is a safetensors file: `x`, float64 [rows, features], row-major as training
reads it; `y`, float64 [rows, target columns] for numbers or int64 [rows] indices into the
sorted labels; and metadata naming the columns (`feature_names`, `target`, `target_columns`)
and, for labels, the `labels` themselves (all JSON strings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.datasets.columns import FeatureSpill
from service.datasets.safetensors_file import TensorSource, write_safetensors
from service.datasets.target import Target
from service.errors import InvalidInput


@dataclass(frozen=True)
class BuiltDataset:
    """A dataset ready to be stored: its file, and the summary its row keeps."""

    path: Path
    size_bytes: int
    n_rows: int
    feature_names: list[str]
    target: str
    columns: list[dict[str, Any]]
    classes: list[Any] | None

    @property
    def n_columns(self) -> int:
        return len(self.columns)


def assemble(features: FeatureSpill, target: Target, folder: Path) -> BuiltDataset:
    if features.n_rows == 0:
        raise InvalidInput("the dataset has no rows: send a header row, then one row per sample")
    if target.n_rows != features.n_rows:  # each reader keeps them in step
        raise AssertionError(f"{features.n_rows} feature rows but {target.n_rows} targets")
    overlap = set(features.names) & set(target.column_names)
    if overlap:
        raise InvalidInput(
            f"the target's name {sorted(overlap)[0]!r} is also a feature's name; name the "
            "target otherwise (the target parameter)"
        )
    metadata = {
        "feature_names": json.dumps(features.names),
        "target": json.dumps(target.name),
        "target_columns": json.dumps(target.column_names),
    }
    if target.labels is not None:
        metadata["labels"] = json.dumps(target.labels)
    x = TensorSource(
        "x", np.dtype("<f8"), (features.n_rows, len(features.names)), features.write_to
    )
    path = folder / "dataset.safetensors"
    with open(path, "wb") as out:
        size = write_safetensors(out, [x, target.tensor()], metadata)
    return BuiltDataset(
        path=path,
        size_bytes=size,
        n_rows=features.n_rows,
        feature_names=features.names,
        target=target.name,
        columns=[*features.summaries(), *target.summaries],
        classes=target.classes,
    )
