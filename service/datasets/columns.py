"""Feature columns as they stream in: checked, summarised and spilled to disk block by block,
so an upload never holds more than one block of them in memory.

A column's summary is what GET /datasets shows and what a submit checks jobs against: min, max,
mean and the population standard deviation (the input scaler's), merged across blocks with
Chan's parallel formula, so the result does not depend on where blocks split.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from service.datasets.limits import FLOAT32_MAX, UploadLimits
from service.errors import InvalidInput

# Where row `row` (0-based, over data rows) of column `name` is, in the client's own terms: a
# CSV's line, an array's index.
Locate = Callable[[int, str], str]


@dataclass
class Moments:
    """Count, mean, sum of squared deviations, min and max of k columns, merged block by block."""

    width: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    low: np.ndarray = field(init=False)
    high: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.width)
        self.m2 = np.zeros(self.width)
        self.low = np.full(self.width, np.inf)
        self.high = np.full(self.width, -np.inf)

    def add(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n == 0:
            return
        block_mean = block.mean(axis=0)
        block_m2 = ((block - block_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = block_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + block_m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.low = np.minimum(self.low, block.min(axis=0))
        self.high = np.maximum(self.high, block.max(axis=0))

    def summaries(
        self, names: list[str], role: Literal["feature", "target"]
    ) -> list[dict[str, Any]]:
        std = np.sqrt(self.m2 / self.count) if self.count else np.zeros(self.width)
        return [
            number_column(name, role, self.low[i], self.high[i], self.mean[i], std[i])
            for i, name in enumerate(names)
        ]


def number_column(
    name: str, role: str, low: float, high: float, mean: float, std: float
) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "kind": "number",
        "min": float(low),
        "max": float(high),
        "mean": float(mean),
        "std": float(std),
        "missing": 0,
    }


def label_column(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "role": "target",
        "kind": "label",
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "missing": 0,
    }


def check_numbers(values: np.ndarray, names: list[str], first_row: int, locate: Locate) -> None:
    """Refuse values a network cannot train on: not finite, or beyond float32's range."""
    bad = ~np.isfinite(values) | (np.abs(values) > FLOAT32_MAX)
    if not bad.any():
        return
    row, column = (int(i) for i in np.argwhere(bad.reshape(len(values), -1))[0])
    value = float(values.reshape(len(values), -1)[row, column])
    where = locate(first_row + row, names[column])
    if not np.isfinite(value):
        raise InvalidInput(f"{where}: {value} is not a finite number")
    raise InvalidInput(f"{where}: {value:g} lies beyond ±{FLOAT32_MAX:.3g} (float32)")


class FeatureSpill:
    """The feature rows of an upload, row-major float64, in a file beside the upload."""

    def __init__(
        self, names: list[str], limits: UploadLimits, folder: Path, locate: Locate
    ) -> None:
        self.names = names
        self.limits = limits
        self.locate = locate
        self.n_rows = 0
        self.moments = Moments(len(names))
        self.path = folder / "features.bin"
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by write_to/close)

    def add(self, block: np.ndarray) -> None:
        """Append rows (a float64 matrix, one column per feature)."""
        problem = self.limits.shape_problem(self.n_rows + len(block), len(self.names))
        if problem:
            raise InvalidInput(f"the dataset has {problem}")
        check_numbers(block, self.names, self.n_rows, self.locate)
        self.moments.add(block)
        self._file.write(np.ascontiguousarray(block, dtype="<f8").data)
        self.n_rows += len(block)

    def summaries(self) -> list[dict[str, Any]]:
        return self.moments.summaries(self.names, "feature")

    def write_to(self, out: BinaryIO) -> None:
        """Copy the rows into `out` (disk to disk, a few megabytes at a time)."""
        self._file.close()
        with open(self.path, "rb") as spilled:
            shutil.copyfileobj(spilled, out, length=4 * 1024 * 1024)

    def close(self) -> None:
        self._file.close()
