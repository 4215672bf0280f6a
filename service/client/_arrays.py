"""Arrays in, JSON out and back: the shapes and values the service accepts, checked here so a
mistake is reported before any data crosses the network."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# A predict request's body stays near this size: well under the service's body limit (8 MiB by
# default), and small enough that one slow chunk does not hold a large answer hostage.
PREDICT_CHUNK_BYTES = 2 * 1024 * 1024
# About what one float64 costs as JSON text ("-0.12345678901234567, ").
JSON_BYTES_PER_NUMBER = 24


def feature_rows(x: ArrayLike, name: str = "x") -> np.ndarray:
    """x as a 2-D float64 array of finite numbers, one row per sample."""
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must hold numbers only: {exc}") from None
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (rows of features), not {array.ndim}-D; "
            "for one row, use x.reshape(1, -1)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinity; the service takes finite numbers only")
    return array


def regression_targets(y: ArrayLike, n_rows: int) -> list[Any]:
    """y as the service takes it: one float per row, or rows of floats (several outputs)."""
    array = np.asarray(y, dtype=np.float64)
    if array.ndim not in (1, 2):
        raise ValueError(f"y must be 1-D or 2-D, not {array.ndim}-D")
    if array.shape[0] != n_rows:
        raise ValueError(f"x has {n_rows} rows but y has {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError("y contains NaN or infinity; the service takes finite numbers only")
    targets: list[Any] = array.tolist()
    return targets


def class_labels(y: ArrayLike, n_rows: int) -> list[int | str]:
    """y as one label per row, each an int or a str (the labels the service accepts)."""
    array = np.asarray(y)
    if array.ndim != 1:
        raise ValueError(f"classification needs y as one label per row (1-D), not {array.shape}")
    if array.shape[0] != n_rows:
        raise ValueError(f"x has {n_rows} rows but y has {array.shape[0]}")
    labels: list[Any] = array.tolist()
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise ValueError(
                f"class labels must be ints or strings, not {type(label).__name__} ({label!r})"
            )
    return labels


def npz_archive(x: ArrayLike, y: ArrayLike, feature_names: Sequence[str] | None) -> bytes:
    """x, y (and the feature names) as an .npz archive: compact, and every float exact."""
    rows = feature_rows(x)
    # Through a list, so labels held as Python objects become a plain string or int array
    # (an archive read without pickle cannot hold objects).
    targets = np.asarray(np.asarray(y).tolist())
    if targets.shape[0] != rows.shape[0]:
        raise ValueError(f"x has {rows.shape[0]} rows but y has {targets.shape[0]}")
    if targets.dtype.kind == "f" and not np.isfinite(targets).all():
        raise ValueError("y contains NaN or infinity; the service takes finite numbers only")
    buffer = io.BytesIO()
    if feature_names is None:
        np.savez(buffer, x=rows, y=targets)
    else:
        names = np.asarray([str(n) for n in feature_names])
        np.savez(buffer, x=rows, y=targets, feature_names=names)
    return buffer.getvalue()


def chunks(rows: np.ndarray) -> Iterator[np.ndarray]:
    """The rows in consecutive slices whose JSON stays near PREDICT_CHUNK_BYTES."""
    per_chunk = max(1, PREDICT_CHUNK_BYTES // (JSON_BYTES_PER_NUMBER * rows.shape[1]))
    for start in range(0, rows.shape[0], per_chunk):
        yield rows[start : start + per_chunk]


def predictions_array(values: Sequence[Any]) -> np.ndarray:
    """Regression rows as floats; class labels as ints or strings, as the model knows them."""
    if values and isinstance(values[0], list):
        return np.asarray(values, dtype=np.float64)
    return np.asarray(values)
