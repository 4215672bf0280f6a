"""The orders GET /models lists models in: newest first, or by a number in their metrics.

Portable across SQLite and PostgreSQL: the metric is read with SQLAlchemy's JSON element access
(`json_extract` there, `->>` here), and models without it come last by an explicit IS NULL term
rather than NULLS LAST, which the two place differently by default.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query
from sqlalchemy import ColumnElement

from service.errors import RequestInvalid
from service.storage.models import Model

# The numbers in a model's metrics that GET /models sorts by (the worker writes them, the
# quality measures through service/training/metrics.py).
SORTABLE_METRICS = (
    "val_r2",
    "val_rmse",
    "val_mae",
    "val_accuracy",
    "val_log_loss",
    "train_r2",
    "train_rmse",
    "train_mae",
    "train_accuracy",
    "train_log_loss",
    "final_train_loss",
    "final_val_loss",
    "best_epoch",
    "epochs_trained",
    "training_seconds",
    "n_parameters",
    "stacked_trials",
    "train_rows",
    "train_rows_evaluated",
    "val_rows",
    "val_rows_evaluated",
)
NEWEST_FIRST = "-created_at"
SORT_KEYS = ("created_at", *SORTABLE_METRICS)
SORT_ORDERS = tuple(order for key in SORT_KEYS for order in (f"-{key}", key))
SortOrder = Annotated[
    str,
    Query(
        description="What to order by, ascending; a leading `-` for descending: `-val_r2` "
        "puts the best R² first, `val_rmse` the lowest RMSE. Models without that metric come "
        "last, and ties newest first.",
        json_schema_extra={
            "enum": list(SORT_ORDERS),
            # Names generated clients give the choices (VAL_R2_DESC rather than VALUE_3).
            "x-enum-varnames": [
                f"{order.removeprefix('-').upper()}{'_DESC' if order.startswith('-') else ''}"
                for order in SORT_ORDERS
            ],
        },
    ),
]


def model_order(sort: str) -> list[ColumnElement[Any]]:
    """ORDER BY terms for a `sort` value; RequestInvalid (422) for one not in SORT_ORDERS."""
    key = sort.removeprefix("-")
    if key not in SORT_KEYS:
        raise RequestInvalid(
            f"query parameter sort: {sort!r} is not something models sort by; use one of "
            f"{', '.join(SORT_KEYS)}, with a leading - for descending"
        )
    newest_first: list[ColumnElement[Any]] = [Model.created_at.desc(), Model.id.desc()]
    if key == "created_at":
        return newest_first if sort.startswith("-") else [Model.created_at.asc(), Model.id.asc()]
    value = Model.metrics[key].as_float()
    # NULLS LAST by hand: the one spelling SQLite and PostgreSQL order alike.
    return [value.is_(None), value.desc() if sort.startswith("-") else value.asc(), *newest_first]
