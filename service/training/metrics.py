"""How good a trained model is, in the measures users compare models by.

Regression: R², RMSE and MAE; classification: accuracy, log-loss and the confusion matrix. Each
is computed by `sklearn.metrics` on one split of the rows ("train" or "val"), in raw target
units, and named `<split>_<measure>` (`val_r2`, `train_log_loss`, ...). Pure: arrays in, a dict
of JSON values out; a measure that is not defined for the rows given is None, never NaN (JSON
has no NaN, and a client should see "not defined" rather than a number).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (  # type: ignore[import-untyped]
    accuracy_score,
    confusion_matrix,
    log_loss,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

Split = str  # "train" or "val"
REGRESSION_MEASURES = ("r2", "rmse", "mae")
CLASSIFICATION_MEASURES = ("accuracy", "log_loss", "confusion_matrix")
# A confusion matrix grows with the square of the classes: above this many, it is left out
# (None) rather than bloat every answer that lists models.
MAX_CONFUSION_CLASSES = 100


def regression_quality(
    split: Split, targets: np.ndarray | None, predictions: np.ndarray | None
) -> dict[str, float | None]:
    """R², RMSE and MAE of `predictions` against `targets` (rows x outputs, raw units), each
    averaged over the outputs. All None without rows or with non-finite predictions; R² is None
    under two rows, where it is not defined."""
    measures: dict[str, float | None] = dict.fromkeys(_names(split, REGRESSION_MEASURES))
    if targets is None or predictions is None or len(targets) == 0:
        return measures
    if not np.isfinite(predictions).all():
        return measures
    y_true, y_pred = np.asarray(targets, np.float64), np.asarray(predictions, np.float64)
    if len(y_true) >= 2:
        measures[f"{split}_r2"] = _finite(r2_score(y_true, y_pred))
    measures[f"{split}_rmse"] = _finite(root_mean_squared_error(y_true, y_pred))
    measures[f"{split}_mae"] = _finite(mean_absolute_error(y_true, y_pred))
    return measures


def classification_quality(
    split: Split, targets: np.ndarray | None, probabilities: np.ndarray | None
) -> dict[str, Any]:
    """Accuracy, log-loss and the confusion matrix of class `probabilities` (rows x classes)
    against `targets` (class indices). The matrix's rows are the true classes and its columns
    the predicted ones, both in the model's `classes` order. All None without rows."""
    measures: dict[str, Any] = dict.fromkeys(_names(split, CLASSIFICATION_MEASURES))
    if targets is None or probabilities is None or len(targets) == 0:
        return measures
    if not np.isfinite(probabilities).all():
        return measures
    y_true = np.asarray(targets, np.int64)
    proba = np.asarray(probabilities, np.float64)
    n_classes = proba.shape[1]
    labels = np.arange(n_classes)
    # Ties go to the first class, as predict answers them.
    y_pred = proba.argmax(axis=1)
    measures[f"{split}_accuracy"] = _finite(accuracy_score(y_true, y_pred))
    # Every class named, so a split that lacks some of them is still scored against all.
    measures[f"{split}_log_loss"] = _finite(log_loss(y_true, proba, labels=labels))
    if n_classes <= MAX_CONFUSION_CLASSES:
        matrix = confusion_matrix(y_true, y_pred, labels=labels)
        measures[f"{split}_confusion_matrix"] = matrix.tolist()
    return measures


def _names(split: Split, measures: tuple[str, ...]) -> list[str]:
    return [f"{split}_{measure}" for measure in measures]


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None
